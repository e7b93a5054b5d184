"""latency_confirm: test latency predictors on archs measured in a fresh, separate pass.

``bench.latency_predictor`` splits one set of measurements into fit and held-out rows.
This bench fits every predictor on *all* of that run's measurements
(``runs/bench_latency_small``) and tests it on ``--fresh`` archs drawn with another seed
and measured now (``runs/bench_latency_small_fresh``; archs already in the fit set are
dropped), for each latency statistic of the raw samples (the profile's median, p10,
min). It exists to confirm, on data not seen when the choice was made, whether the
minimum of the raw samples — the statistic least affected by brief interference from
other processes — predicts better than the median (bench/RESULTS.md, latency_predictor).

    python -m bench.latency_confirm [--device local-cpu] [--fresh 100] [--seed 1]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today  # noqa: E402

HERE = Path(__file__).resolve().parent

# (label, predictor kind, options)
PREDICTORS = [("learned (gbrt)", "learned", {}), ("learned (ridge)", "learned", {"model": "ridge"}),
              ("lut", "lut", {})]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.latency_confirm", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--fresh", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--statistics", default="profile,p10,min")
    args = ap.parse_args(argv)
    from nasplat.experiment import load_experiment
    from nasplat.hw.stage import experiment_profile, measurements_path, profile_experiment
    from nasplat.hw.stage import read_measurements
    from nasplat.predict import regression_metrics
    from nasplat.predict._base import LATENCY_PREDICTORS
    from nasplat.hw.stage import latency_target
    from nasplat.predict.lut import experiment_lut

    exp = load_experiment(HERE / "latency_small.yaml")
    fresh = load_experiment(HERE / "latency_small.yaml")
    fresh.config = fresh.config.model_copy(update={"name": exp.config.name + "_fresh", "seed": args.seed})
    profile = experiment_profile(exp, args.device)
    fit_rows = read_measurements(measurements_path(exp.run_dir, profile.name))
    if not fit_rows:
        print(f"no measurements in {exp.run_dir}: run `python -m bench.latency_predictor` first", file=sys.stderr)
        return 2
    known = {r["arch_id"] for r in fit_rows}
    n = args.fresh
    while True:  # draw until `--fresh` archs outside the fit set are measured
        profile_experiment(fresh, args.device, n)
        test_rows = [r for r in read_measurements(measurements_path(fresh.run_dir, profile.name))
                     if r["arch_id"] not in known]
        if len(test_rows) >= args.fresh or n > 4 * args.fresh:
            break
        n += args.fresh - len(test_rows)
    space = exp.space
    fit_archs = [space.arch(json.loads(r["arch"])) for r in fit_rows]
    test_archs = [space.arch(json.loads(r["arch"])) for r in test_rows]
    print(f"# latency_confirm  {today()}  {machine()}")
    print(f"device {args.device}; fit on {len(fit_rows)} archs of {exp.run_dir}; tested on {len(test_rows)} fresh "
          f"archs (seed {args.seed}) of {fresh.run_dir}")
    print("\n| statistic | predictor | RMSE ms | RMSPE % | ±5 % | ±10 % | Spearman | Kendall |")
    print("|---|---|---|---|---|---|---|---|")
    for stat in args.statistics.split(","):
        y_fit, y_test = latency_target(fit_rows, stat), latency_target(test_rows, stat)
        for label, kind, options in PREDICTORS:
            table = None
            if kind == "lut":
                table = experiment_lut(exp, profile, stat)
            pred = LATENCY_PREDICTORS.get(kind)(space, table, **options).fit(fit_archs, y_fit)
            m = regression_metrics(y_test, pred.predict(test_archs))
            print(f"| {'median' if stat == 'profile' else stat} | {label} | {m['rmse']:.4f} | {m['rmspe']:.2f} | "
                  f"{m['within_5pct']:.1f} | {m['within_10pct']:.1f} | {m['spearman']:.4f} | {m['kendall']:.4f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
