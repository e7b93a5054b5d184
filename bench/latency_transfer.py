"""latency_transfer: a new device's latency predictor from few measurements, with a device
already profiled as the prior (docs/benchmarks.md).

Known device: ``local-cpu`` (fp32), through its fitted predictor — the shipped one
(``predictors/ofa_mbv3_small/local-cpu``, 300 archs) when it was measured on a machine
like this one, the one in ``--base-run`` when given, else one fitted here on
``--base-archs`` (300) archs the bench measures first (``runs/bench_latency_transfer_base``). New device: ``local-cpu-int8`` (the same
CPU, static INT8 quantisation: other kernels, another latency shape). The bench measures
the new device itself, now (timing-sensitive: run it on an idle machine):

- ``--train`` (200) archs stratified over MACs (seed 11) in ``runs/bench_latency_transfer``,
- ``--test`` (100) fresh archs (seed 12, those also in the training set dropped) in
  ``runs/bench_latency_transfer_test``;

both resumable. For n in 25 / 50 / 100 / 200 (the first n of the stratified training
archs, which spread over MACs at every n), it fits the ``transfer`` predictor (the known
device's prediction as the prior, see nasplat/predict/transfer.py) and the plain
``learned`` predictor on the n measurements, and reports the share of the test archs
within ±10 % and Spearman ρ. Statistic: the profile's (median).

Goal (docs/benchmarks.md): ≥ 99 % within ±10 % and ρ ≥ 0.98 from ≤ 100 measured archs.
Anchors: nn-Meter 99.0 % within ±10 % on a mobile CPU (from thousands of kernel
measurements); HELP ρ 0.989 from 10 measurements per device (meta-trained on many devices).

    python -m bench.latency_transfer [--quick] [--base-run runs/bench_latency_small]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today  # noqa: E402

HERE = Path(__file__).resolve().parent
NEW, KNOWN = "local-cpu-int8", "local-cpu"


def measured(exp, n: int, seed: int, name: str, quick: bool):
    """(archs, latency_ms) of ``n`` stratified archs measured on the new device."""
    from nasplat.hw.stage import latency_target, measurements_path, profile_experiment, read_measurements

    cfg = exp.config
    update = {"name": name + ("_quick" if quick else ""), "seed": seed}
    if quick:  # a shorter timing protocol: the path works, the figures are indicative
        update["profile"] = cfg.profile.model_copy(update={"protocol": cfg.profile.protocol.model_copy(
            update={"warmup_runs": 5, "warmup_seconds": 0.1, "timed_runs": 20})})
    exp.config = cfg.model_copy(update=update)
    profile_experiment(exp, NEW, n, quiet=False)
    rows = read_measurements(measurements_path(exp.run_dir, NEW))
    archs = [exp.space.arch(json.loads(r["arch"])) for r in rows]
    return archs, latency_target(rows, "profile")


def known_predictor(exp, args):
    """(the known device's predictor, where it comes from): see the module docstring."""
    from nasplat.errors import UserError
    from nasplat.hw.stage import latency_target, measurements_path, profile_experiment, read_measurements
    from nasplat.predict import LearnedPredictor, load_latency_predictor

    try:
        return load_latency_predictor(args.base_run, KNOWN, exp.space), (args.base_run or "the shipped predictor")
    except UserError as e:
        print(f"{e.message}: measuring {args.base_archs} archs of {KNOWN} here first", flush=True)
    cfg = exp.config
    exp.config = cfg.model_copy(update={"name": "bench_latency_transfer_base" + ("_quick" if args.quick else "")})
    profile_experiment(exp, KNOWN, args.base_archs, quiet=False)
    rows = read_measurements(measurements_path(exp.run_dir, KNOWN))
    archs = [exp.space.arch(json.loads(r["arch"])) for r in rows]
    exp.config = cfg
    return (LearnedPredictor(exp.space).fit(archs, latency_target(rows, "profile")),
            f"learned, fitted here on {len(archs)} measured archs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.latency_transfer", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30 + 20 archs, a short protocol, n = 10 / 20 / 30")
    ap.add_argument("--train", type=int, default=None)
    ap.add_argument("--test", type=int, default=None)
    ap.add_argument("--sizes", default=None, help="comma list of n (default 25,50,100,200)")
    ap.add_argument("--base-run", default=None, help="run folder holding predictors/local-cpu (default: shipped)")
    ap.add_argument("--base-archs", type=int, default=None,
                    help="archs of local-cpu to measure when no predictor of it describes this machine (300)")
    args = ap.parse_args(argv)
    n_train = args.train or (30 if args.quick else 200)
    n_test = args.test or (20 if args.quick else 100)
    args.base_archs = args.base_archs or (40 if args.quick else 300)
    sizes = [int(s) for s in (args.sizes or ("10,20,30" if args.quick else "25,50,100,200")).split(",")]

    from nasplat.experiment import load_experiment
    from nasplat.hw.stage import stratified_archs
    from nasplat.predict import LearnedPredictor, TransferPredictor, regression_metrics

    t0 = time.time()
    exp = load_experiment(HERE / "latency_small.yaml")
    space = exp.space
    print(f"# latency_transfer  {today()}  {machine()}")
    base, base_note = known_predictor(exp, args)
    train_archs, train_y = measured(exp, n_train, 11, "bench_latency_transfer", args.quick)
    order = {a.id: i for i, a in enumerate(stratified_archs(space, n_train, 11))}
    keep = sorted((i for i, a in enumerate(train_archs) if a.id in order), key=lambda i: order[train_archs[i].id])
    train_archs, train_y = [train_archs[i] for i in keep], train_y[keep]
    test_exp = load_experiment(HERE / "latency_small.yaml")
    test_archs, test_y = measured(test_exp, n_test + 10, 12, "bench_latency_transfer_test", args.quick)
    seen = {a.id for a in train_archs}
    fresh = [i for i, a in enumerate(test_archs) if a.id not in seen][:n_test]
    test_archs, test_y = [test_archs[i] for i in fresh], test_y[fresh]
    print(f"known device {KNOWN}: {base_note}; new device {NEW}: "
          f"{len(train_archs)} training archs (seed 11), {len(test_archs)} fresh test archs (seed 12); "
          f"measured in {time.time() - t0:.0f} s")
    prior = regression_metrics(test_y, np.exp(np.polyval(np.polyfit(np.log(base.predict(train_archs)),
                                                                      np.log(train_y), 1),
                                                          np.log(base.predict(test_archs)))))
    print(f"(the known device alone, rescaled on all {len(train_archs)} archs: ±10 % {prior['within_10pct']:.1f} %, "
          f"Spearman {prior['spearman']:.4f})")
    print("\n| measured archs of the new device | predictor | ±10 % | ±5 % | Spearman | Kendall | RMSPE % |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        if n > len(train_archs):
            continue
        archs, y = train_archs[:n], train_y[:n]
        for label, pred in (("transfer (prior: local-cpu)", TransferPredictor(space, base, base_device=KNOWN)),
                            ("learned (gbrt, new device only)", LearnedPredictor(space))):
            m = regression_metrics(test_y, pred.fit(archs, y).predict(test_archs))
            print(f"| {n} | {label} | {m['within_10pct']:.1f} | {m['within_5pct']:.1f} | {m['spearman']:.4f} | "
                  f"{m['kendall']:.4f} | {m['rmspe']:.2f} |", flush=True)
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
