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


def _experiment(quick: bool, path: Path = HERE / "latency_small.yaml"):
    from nasplat.experiment import load_experiment

    exp = load_experiment(path)
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
    meds = np.zeros((2, repeats, len(models)))
    for r in range(repeats):  # interleaved: every arch once per round
        for j, row in enumerate(measure_models(models, profile, protocol)):
            samples = np.array(row["samples_ms"].split(), dtype=np.float64)
            meds[0, r, j], meds[1, r, j] = row["latency_ms"], np.percentile(samples, 10)
    out = {"archs": len(models), "repeats": repeats}
    for i, stat in enumerate(("median", "p10")):
        m = meds[i]
        centre = np.median(m, 0)
        rel = np.abs(m / centre - 1)
        out[stat] = {"within_10pct": float(np.mean(rel <= 0.10) * 100), "within_5pct": float(np.mean(rel <= 0.05) * 100),
                     "cv_pct": float(np.median(m.std(0) / centre) * 100),
                     "max_spread_pct": float(np.max((m.max(0) - m.min(0)) / centre) * 100)}
    return out


def throughput(space, pred, n: int = 10_000, repeats: int = 3) -> tuple[float, float]:
    """Predictions per second for one batch of ``n`` archs: from Arch objects
    (``predict``) and from encoded index rows (``predict_codes``, what the search's
    inner loops call); the best of ``repeats``."""
    rng = np.random.default_rng(7)
    many = [space.sample(rng) for _ in range(n)]
    codes = space.encode_batch(many)
    pred.predict(many[:10])  # warm caches (lut tables, tree kernels)
    best = [np.inf, np.inf]
    for _ in range(repeats):
        for k, fn in enumerate((lambda: pred.predict(many), lambda: pred.predict_codes(codes))):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return n / best[0], n / best[1]


def shipped_throughput(exp) -> int:
    """Predictions/s of the shipped predictors of the experiment's space, and of a lut
    fitted on the run's cached table and measurements when the run has them."""
    from nasplat.hw.stage import experiment_profile, latency_target, measurements_path, read_measurements
    from nasplat.paths import SHIPPED_PREDICTORS
    from nasplat.predict import LUTPredictor, load_latency_predictor

    print(f"latency_predictor --throughput: {exp.space.config.name}; machine: {machine()}; date {today()}")
    print("\n| device | predictor | predictions/s from archs | from encoded archs |")
    print("|---|---|---|---|")
    for folder in sorted((SHIPPED_PREDICTORS / exp.space.config.name).iterdir()):
        # throughput does not depend on which machine the latencies describe
        pred = load_latency_predictor(None, folder.name, exp.space, check_machine=False)
        pps, codes = throughput(exp.space, pred)
        print(f"| {folder.name} | shipped {pred.kind} | {pps:,.0f} | {codes:,.0f} |", flush=True)
        table = profile_dir_table(exp, folder.name)
        rows = read_measurements(measurements_path(exp.run_dir, folder.name)) if table else []
        if rows:
            archs = [exp.space.arch(json.loads(r["arch"])) for r in rows]
            lut = LUTPredictor(exp.space, table).fit(archs, latency_target(rows, "profile"))
            pps, codes = throughput(exp.space, lut)
            print(f"| {experiment_profile(exp, folder.name).name} | lut ({len(table)} units, this run) | "
                  f"{pps:,.0f} | {codes:,.0f} |", flush=True)
    return 0


def profile_dir_table(exp, device: str) -> dict | None:
    from nasplat.hw.stage import profile_dir

    path = profile_dir(exp.run_dir, device) / "lut_units.json"
    return json.loads(path.read_text())["table"] if path.is_file() else None


def run_device(exp, device: str, samples: int, n_test: int, max_measure_s: float | None, ship: bool,
               skip_lut: bool, noise_archs: int = 6) -> dict:
    from nasplat.hw.stage import experiment_profile, measurements_path, read_measurements
    from nasplat.hw.stage import profile_experiment, stratified_archs
    from nasplat.predict import format_metrics, save_predictor
    from nasplat.hw.stage import latency_target
    from nasplat.predict.lut import experiment_lut
    from nasplat.predict.stage import fit_and_evaluate

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
    tf = min(n_test, len(rows) // 4) / len(rows)
    result = {"device": device, "precision": profile.precision, "measured": len(rows), "protocol": protocol.model_dump()}
    fitted = {}
    # the profile's statistic (median) and the 10th percentile of the same raw samples,
    # which is robust to the preemption spikes of a busy machine; the lut table holds the
    # same statistic of each block
    plan = [("learned", "profile"), ("learned", "p10")] + ([] if skip_lut else [("lut", "profile"), ("lut", "p10")])
    for kind, stat in plan:
        y = latency_target(rows, stat)
        table = None
        t1 = time.perf_counter()
        if kind == "lut":
            table = experiment_lut(exp, profile, stat)
        build_s = time.perf_counter() - t1
        t1 = time.perf_counter()
        pred, tr, te, m = fit_and_evaluate(exp.space, kind, archs, y, tf, exp.config.seed, None, table)
        fit_s = time.perf_counter() - t1
        pps, pps_codes = throughput(exp.space, pred)
        m.update({"n_train": len(tr), "fit_s": fit_s, "lut_build_s": build_s, "predictions_per_s": pps,
                  "predictions_per_s_codes": pps_codes, "statistic": "median" if stat == "profile" else stat})
        label = f"{kind}/{m['statistic']}"
        result[label] = m
        fitted[label] = (pred, tr, y, stat)
        print(f"  {device} {label}: train {len(tr)}, held-out {format_metrics(m)}; fit {fit_s:.2f}s, "
              f"{pps:,.0f} predictions/s ({pps_codes:,.0f}/s from encoded archs)", flush=True)
    result["noise"] = _noise(exp, profile, protocol, noise_archs)
    # wall time of one measurement (export + session + warm-up + timed runs), from the run's own log
    stamps = sorted(r["measured_at"] for r in rows if r.get("measured_at"))
    result["s_per_measurement"] = float("nan")
    if len(stamps) > 16:
        import datetime as dt

        t = [dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").timestamp() for s in stamps]
        gaps = np.diff(t)
        result["s_per_measurement"] = float(np.median(gaps[gaps > 0]) / 8) if np.any(gaps > 0) else float("nan")
    if ship:
        best = max(fitted, key=lambda k: (result[k]["within_10pct"], result[k]["spearman"]))
        pred, tr, y, stat = fitted[best]
        out = REPO / "predictors" / exp.space.config.name / device
        if out.exists():
            shutil.rmtree(out)
        save_predictor(out, pred, [archs[i] for i in tr], y[tr], target="latency_ms",
                       extra={"device": device, "metrics": result[best], "n_test": int(len(archs) - len(tr)),
                              "statistic": stat,
                              "measurements": "measurements.csv", "bench": "bench/latency_predictor.py"})
        shutil.copy(path, out / "measurements.csv")
        (out / "metrics.json").write_text(json.dumps({k: result[k] for k in fitted} | {"noise": result["noise"],
                                                     "shipped": best, "machine": machine(), "date": today()},
                                                     indent=2) + "\n")
        print(f"  shipped {best} -> {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.latency_predictor", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--exp", type=Path, default=HERE / "latency_small.yaml",
                    help="experiment YAML (space, data, hardware); default bench/latency_small.yaml")
    ap.add_argument("--devices", default=None, help="comma list (default: local-cpu,local-cpu-int8; quick: local-cpu)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--test", type=int, default=None)
    ap.add_argument("--max-measure-s", type=float, default=None)
    ap.add_argument("--skip-lut", action="store_true")
    ap.add_argument("--lut-devices", default=None, help="comma list of devices that get a lut (default: all)")
    ap.add_argument("--noise-archs", type=int, default=6)
    ap.add_argument("--ship", action="store_true")
    ap.add_argument("--throughput", action="store_true",
                    help="only the predictions/s of the shipped predictors (and of a lut whose table the run holds)")
    args = ap.parse_args(argv)
    if args.throughput:
        return shipped_throughput(_experiment(False, args.exp))
    exp = _experiment(args.quick, args.exp)
    devices = (args.devices or ("local-cpu" if args.quick else "local-cpu,local-cpu-int8")).split(",")
    samples = args.samples or (60 if args.quick else 400)
    n_test = args.test or (15 if args.quick else 100)
    print(f"latency_predictor: {exp.space.config.name}, {samples} archs per device ({n_test} held out)")
    print(f"machine: {machine()}; date {today()}")
    lut_devices = set(args.lut_devices.split(",")) if args.lut_devices else set(devices)
    results = [run_device(exp, d, samples, n_test, args.max_measure_s, args.ship,
                          args.skip_lut or d not in lut_devices, args.noise_archs) for d in devices]
    print("\n| device | predictor / statistic | train / held-out | RMSE ms | RMSPE % | ±5 % | ±10 % | Spearman | Kendall | "
          "predictions/s (archs / encoded) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for k in [k for k in r if "/" in k]:  # the "<kind>/<statistic>" entries
            m = r[k]
            print(f"| {r['device']} | {k} | {m['n_train']} / {int(m['n'])} | {m['rmse']:.4f} | {m['rmspe']:.2f} | "
                  f"{m['within_5pct']:.1f} | {m['within_10pct']:.1f} | {m['spearman']:.4f} | {m['kendall']:.4f} | "
                  f"{m['predictions_per_s']:,.0f} / {m['predictions_per_s_codes']:,.0f} |")
    print("\n| device | statistic | repeats within ±10 % | within ±5 % | median CV % | max spread % | s per measurement |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for stat in ("median", "p10"):
            n = r["noise"][stat]
            print(f"| {r['device']} | {stat} | {n['within_10pct']:.1f} | {n['within_5pct']:.1f} | {n['cv_pct']:.2f} | "
                  f"{n['max_spread_pct']:.1f} | {r['s_per_measurement']:.2f} |")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
