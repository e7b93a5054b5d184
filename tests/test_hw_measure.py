"""Timing a tiny model with ONNX Runtime: positive, finite, stable, raw samples kept."""
from __future__ import annotations

import numpy as np

from nasplat.hw import load_profile, measure_models
from nasplat.hw.profile import Protocol
from nasplat.hw.runner import measure_models as run_models, summarize

from _hw_helpers import tiny_onnx


def test_tiny_model_measurement_is_positive_finite_and_keeps_samples():
    prof = load_profile("local-cpu")
    proto = Protocol(warmup_runs=3, warmup_seconds=0.0, timed_runs=30)
    models = [{"arch_id": f"m{i}", "data": tiny_onnx(4 + 4 * i, seed=i), "input_shape": [1, 3, 8, 8],
               "note": f"n{i}"} for i in range(3)]
    rows = measure_models(models, prof, proto)
    assert [r["arch_id"] for r in rows] == ["m0", "m1", "m2"]  # input order, whatever the timing order
    for r in rows:
        samples = [float(v) for v in r["samples_ms"].split()]
        assert len(samples) == r["runs"] == 30
        assert all(np.isfinite(samples)) and min(samples) > 0
        # the statistics are those of the samples kept (rounded in the samples string)
        assert r["latency_ms"] == r["median_ms"]
        assert np.isclose(r["median_ms"], np.median(samples), rtol=1e-3)
        assert np.isclose(r["min_ms"], min(samples), rtol=1e-3) and np.isclose(r["mean_ms"], np.mean(samples), rtol=1e-3)
        q75, q25 = np.percentile(samples, [75, 25])
        assert np.isclose(r["iqr_ms"], q75 - q25, rtol=1e-2, atol=1e-4)
        assert r["note"] == f"n{r['arch_id'][1:]}" and r["ort_version"]


def test_repeated_measurement_of_one_model_is_stable():
    data = tiny_onnx(16)
    settings = load_profile("local-cpu").settings(Protocol(warmup_runs=5, warmup_seconds=0.0, timed_runs=40))
    meds = [run_models([{"arch_id": "a", "data": data, "input_shape": [1, 3, 8, 8]}], settings)[0]["median_ms"]
            for _ in range(3)]
    # the same model three times: medians agree within a factor 3 even on a busy machine
    assert max(meds) / min(meds) < 3.0


def test_summarize_statistics():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0], "median")
    assert s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["runs"] == 5 and s["latency_ms"] == 3.0
    assert summarize([1.0, 3.0], "mean")["latency_ms"] == 2.0
    assert summarize([1.0, 3.0], "min")["latency_ms"] == 1.0
