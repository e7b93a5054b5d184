"""Benchmark ``latency_predictor``: how well the ``learned`` and ``lut`` predictors
predict measured ONNX Runtime latency of held-out subnets (ofa_mbv3_small, 32x32) on
the local CPU in fp32 and INT8, against the machine's own measurement noise.

    python -m bench.latency_predictor            # full: 400 archs per device (300 fit + 100 held out)
    python -m bench.latency_predictor --quick    # 60 archs, short protocol, fp32 only
    python -m bench.latency_predictor --ship     # also write predictors/ofa_mbv3_small/<device>/

Measurements are resumable (``runs/bench_latency_small[_quick]/profiles``), so an
interrupted run continues. ``--max-measure-s`` stops measuring after that many seconds
per device and evaluates on what was measured (the printed counts say how many).
Noise: 6 archs, each exported once and measured 5 times in fresh sessions, interleaved;
the share of repeated medians within ±10% of the arch's median bounds what any
predictor can reach on this machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from bench._common import machine, today

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _experiment(quick: bool):
    from nasplat.experiment import load_experiment

    exp = load_experiment(HERE / "latency_small.yaml")
    if quick:  # same space and data, its own run folder and a shorter protocol
        cfg = exp.config.model_copy(update={
            "name": exp.config.name + "_quick",
            "profile": exp.config.profile.model_copy(update={"protocol": exp.config.profile.protocol.model_copy(
                update={"warmup_runs": 5, "warmup_seconds": 0.1, "timed_runs": 30})})})
        exp.config = cfg
    return exp


def _noise(exp, profile, protocol, n_archs: int = 6, repeats: int = 5) -> dict:
    from nasplat.hw.measure import export_arch, measure_models
    from nasplat.hw.stage import load_profiling_supernet, stratified_archs

    net = load_profiling_supernet(exp)
    calib = None
    if profile.precision == "int8":
        from nasplat.hw.stage import calibration_images

        calib = calibration_images(exp, profile.quantization.calib_images)
    models = [export_arch(net, exp.space, a, profile, calib) for a in stratified_archs(exp.space, n_archs, 123)]
    meds = np.zeros((repeats, len(models)))
    for r in range(repeats):  # interleaved: every arch once per round
        for j, row in enumerate(measure_models(models, profile, protocol)):
            meds[r, j] = row["latency_ms"]
    centre = np.median(meds, 0)
    rel = np.abs(meds / centre - 1)
    return {"archs": len(models), "repeats": repeats, "within_10pct": float(np.mean(rel <= 0.10) * 100),
            "within_5pct": float(np.mean(rel <= 0.05) * 100), "cv_pct": float(np.median(meds.std(0) / centre) * 100),
            "max_spread_pct": float(np.max((meds.max(0) - meds.min(0)) / centre) * 100)}


def run_device(exp, device: str, samples: int, n_test: int, max_measure_s: float | None, ship: bool,
               skip_lut: bool) -> dict:
    from nasplat.hw.stage import experiment_profile, measurements_path, profile_dir, read_measurements
    from nasplat.hw.stage import profile_experiment, stratified_archs
    from nasplat.predict import format_metrics, regression_metrics, save_predictor
    from nasplat.predict.stage import fit_and_evaluate, lut_table

    profile = experiment_profile(exp, device)
    protocol = exp.config.profile.protocol_for(profile)
    path = measurements_path(exp.run_dir, profile.name)
    t0 = time.perf_counter()
    wanted = stratified_archs(exp.space, samples, exp.config.seed)
    step = max(8, samples // 10)
    for n in range(step, samples + step, step):  # in steps, so --max-measure-s can stop cleanly
        profile_experiment(exp, device, min(n, samples), quiet=False)
        if max_measure_s is not None and time.perf_counter() - t0 > max_measure_s:
            break
    measure_s = time.perf_counter() - t0
    rows = {r["arch_id"]: r for r in read_measurements(path)}
    rows = [rows[a.id] for a in wanted if a.id in rows]
    archs = [exp.space.arch(json.loads(r["arch"])) for r in rows]
    y = np.array([r["latency_ms"] for r in rows])
    tf = min(n_test, len(rows) // 4) / len(rows)
    result = {"device": device, "precision": profile.precision, "measured": len(rows), "protocol": protocol.model_dump()}
    kinds = ["learned"] + ([] if skip_lut else ["lut"])
    fitted = {}
    for kind in kinds:
        table = None
        t1 = time.perf_counter()
        if kind == "lut":
            table = lut_table(exp.space, profile, profile_dir(exp.run_dir, profile.name) / "lut_units.json", protocol)
        build_s = time.perf_counter() - t1
        t1 = time.perf_counter()
        pred, tr, te, m = fit_and_evaluate(exp.space, kind, archs, y, tf, exp.config.seed)
        fit_s = time.perf_counter() - t1
        rng = np.random.default_rng(7)
        many = [exp.space.sample(rng) for _ in range(2000)]
        t1 = time.perf_counter()
        pred.predict(many)
        pps = len(many) / (time.perf_counter() - t1)
        m.update({"n_train": len(tr), "fit_s": fit_s, "lut_build_s": build_s, "predictions_per_s": pps})
        result[kind] = m
        fitted[kind] = (pred, tr)
        print(f"  {device} {kind}: train {len(tr)}, held-out {format_metrics(m)}; fit {fit_s:.2f}s, "
              f"{pps:,.0f} predictions/s", flush=True)
    result["noise"] = _noise(exp, profile, protocol)
    # wall time of one measurement (export + session + warm-up + timed runs), from the run's own log
    stamps = sorted(r["measured_at"] for r in rows if r.get("measured_at"))
    result["s_per_measurement"] = float("nan")
    if len(stamps) > 16:
        import datetime as dt

        t = [dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").timestamp() for s in stamps]
        gaps = np.diff(t)
        result["s_per_measurement"] = float(np.median(gaps[gaps > 0]) / 8) if np.any(gaps > 0) else float("nan")
    if ship:
        best = max(kinds, key=lambda k: (result[k]["within_10pct"], result[k]["spearman"]))
        pred, tr = fitted[best]
        out = REPO / "predictors" / exp.space.config.name / device
        if out.exists():
            shutil.rmtree(out)
        save_predictor(out, pred, [archs[i] for i in tr], y[tr], target="latency_ms",
                       extra={"device": device, "metrics": result[best], "n_test": int(len(archs) - len(tr)),
                              "measurements": "measurements.csv", "bench": "bench/latency_predictor.py"})
        shutil.copy(path, out / "measurements.csv")
        (out / "metrics.json").write_text(json.dumps({k: result[k] for k in kinds} | {"noise": result["noise"],
                                                     "shipped": best, "machine": machine(), "date": today()},
                                                     indent=2) + "\n")
        print(f"  shipped {best} -> {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.latency_predictor", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--devices", default=None, help="comma list (default: local-cpu,local-cpu-int8; quick: local-cpu)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--test", type=int, default=None)
    ap.add_argument("--max-measure-s", type=float, default=None)
    ap.add_argument("--skip-lut", action="store_true")
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args(argv)
    exp = _experiment(args.quick)
    devices = (args.devices or ("local-cpu" if args.quick else "local-cpu,local-cpu-int8")).split(",")
    samples = args.samples or (60 if args.quick else 400)
    n_test = args.test or (15 if args.quick else 100)
    print(f"latency_predictor: {exp.space.config.name}, {samples} archs per device ({n_test} held out)")
    print(f"machine: {machine()}; date {today()}")
    results = [run_device(exp, d, samples, n_test, args.max_measure_s, args.ship, args.skip_lut) for d in devices]
    print("\n| device | predictor | train / held-out | RMSE ms | RMSPE % | ±5 % | ±10 % | Spearman | Kendall | "
          "predictions/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for k in ("learned", "lut"):
            if k in r:
                m = r[k]
                print(f"| {r['device']} | {k} | {m['n_train']} / {int(m['n'])} | {m['rmse']:.4f} | {m['rmspe']:.2f} | "
                      f"{m['within_5pct']:.1f} | {m['within_10pct']:.1f} | {m['spearman']:.4f} | {m['kendall']:.4f} | "
                      f"{m['predictions_per_s']:,.0f} |")
    print("\n| device | noise: repeats within ±10 % | within ±5 % | median CV % | max spread % | s per measurement |")
    print("|---|---|---|---|---|---|")
    for r in results:
        n = r["noise"]
        print(f"| {r['device']} | {n['within_10pct']:.1f} | {n['within_5pct']:.1f} | {n['cv_pct']:.2f} | "
              f"{n['max_spread_pct']:.1f} | {r['s_per_measurement']:.2f} |")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
