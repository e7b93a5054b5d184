"""Latency / accuracy predictors: fit, held-out metrics, save without pickle and load
with identical predictions; the fit CLI; the LUT's block measurement."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nasplat.cli import main
from nasplat.errors import UserError
from nasplat.experiment import load_experiment
from nasplat.hw import MEASUREMENT_COLUMNS, load_profile
from nasplat.hw.profile import Protocol
from nasplat.hw.stage import measurements_path
from nasplat.io import append_csv_rows
from nasplat.predict import (AccuracyPredictor, LearnedPredictor, LUTPredictor, load_accuracy_predictor,
                             load_latency_predictor, load_predictor, measure_units, save_predictor)
from nasplat.predict.lut import unit_set
from nasplat.space import load_space

from _hw_helpers import REPO, write_experiment


@pytest.fixture(scope="module")
def space():
    return load_space(REPO / "search_spaces" / "ofa_mbv3_digits.yaml")


def synthetic(space, n, seed=0):
    """Archs with a latency that is additive over blocks plus a constant (like a device)."""
    rng = np.random.default_rng(seed)
    archs = list({a.id: a for a in (space.sample(rng) for _ in range(n))}.values())
    y = np.array([0.05 + sum(m for m, _ in space.stage_costs(a)) / 2e7 for a in archs])
    return archs, y * (1 + 0.01 * rng.standard_normal(len(y)))


def test_learned_fits_and_round_trips_exactly(tmp_path, space):
    archs, y = synthetic(space, 120)
    p = LearnedPredictor(space).fit(archs[:100], y[:100])
    pred = p.predict(archs[100:])
    rel = np.abs(pred / y[100:] - 1)
    assert np.mean(rel < 0.10) > 0.9
    save_predictor(tmp_path / "p", p, archs[:100], y[:100], target="latency_ms")
    assert not list((tmp_path / "p").glob("*.pkl"))
    meta = json.loads((tmp_path / "p" / "predictor.json").read_text())
    assert meta["kind"] == "learned" and meta["space_hash"] == space.hash()
    q = load_predictor(tmp_path / "p", space)
    assert np.array_equal(q.predict(archs[100:]), pred)


def test_lut_sums_units_and_round_trips(tmp_path, space):
    us = unit_set(space)
    keys = us.all_units()
    assert len(keys) == len(set(keys)) > 20
    table = {k: 0.01 + 0.001 * i for i, k in enumerate(keys)}
    archs, _ = synthetic(space, 30)
    y = np.array([2.0 * sum(table[k] for k in us.units(a)) + 0.3 for a in archs])
    p = LUTPredictor(space, table).fit(archs, y)
    assert p.scale_ == pytest.approx(2.0) and p.overhead_ == pytest.approx(0.3)
    assert np.allclose(p.predict(archs), y)
    save_predictor(tmp_path / "lut", p, archs, y, target="latency_ms")
    assert np.array_equal(load_predictor(tmp_path / "lut", space).predict(archs), p.predict(archs))


def test_lut_measures_blocks_on_the_device(space):
    keys = unit_set(space).all_units()
    picked = [keys[0], keys[5], keys[-1]]  # stem, a block, the head
    table = measure_units(space, load_profile("local-cpu"), picked,
                          Protocol(warmup_runs=2, warmup_seconds=0.0, timed_runs=10))
    assert set(table) == set(picked) and all(v > 0 for v in table.values())


def test_accuracy_predictor_round_trip(tmp_path, space):
    archs, lat = synthetic(space, 60, seed=3)
    acc = 0.5 + 0.4 * (lat - lat.min()) / np.ptp(lat)
    p = AccuracyPredictor(space).fit(archs[:50], acc[:50])
    out = p.predict(archs[50:])
    assert out.min() >= 0 and out.max() <= 1
    from scipy.stats import spearmanr

    assert spearmanr(out, acc[50:]).statistic > 0.8
    save_predictor(tmp_path / "predictors" / "accuracy", p, archs[:50], acc[:50], target="accuracy")
    assert np.array_equal(load_accuracy_predictor(tmp_path, space).predict(archs[50:]), out)


def test_fit_cli_saves_and_load_api_finds_it(tmp_path, capsys, space):
    exp_path = write_experiment(tmp_path, "fit", samples=3)
    exp = load_experiment(exp_path)
    path = measurements_path(exp.run_dir, "local-cpu")
    assert main(["predictor", "fit", str(exp_path), "--device", "local-cpu"]) == 2  # nothing measured yet
    assert "nasplat profile" in capsys.readouterr().err
    archs, y = synthetic(space, 40, seed=1)
    append_csv_rows(path, [{"profile": "local-cpu", "arch_id": a.id, "arch": a.to_json(), "latency_ms": v,
                            "samples_ms": f"{v}"} for a, v in zip(archs, y)], MEASUREMENT_COLUMNS)
    assert main(["predictor", "fit", str(exp_path), "--device", "local-cpu", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 8 and out["spearman"] > 0.5
    folder = exp.run_dir / "predictors" / "local-cpu"
    assert {"predictor.json", "train.csv", "metrics.json", "test.csv"} <= {p.name for p in folder.iterdir()}
    # the reported figure is the held-out rows' own: recomputed from test.csv
    with open(folder / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rel = [abs(float(r["predicted_ms"]) / float(r["measured_ms"]) - 1) for r in rows]
    assert len(rows) == 8 and out["within_10pct"] == pytest.approx(100 * sum(e <= 0.1 for e in rel) / 8, abs=1e-4)
    p = load_latency_predictor(exp.run_dir, "local-cpu", space)
    assert p.predict(archs[:5]).shape == (5,) and np.all(p.predict(archs[:5]) > 0)
    other = load_space(REPO / "search_spaces" / "ofa_mbv3_small.yaml")
    with pytest.raises(UserError, match="another search space"):
        load_predictor(folder, other)
    with pytest.raises(UserError, match="no latency predictor"):
        load_latency_predictor(exp.run_dir, "no-such-device", space)
