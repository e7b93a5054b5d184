"""search_efficiency: evaluations each searcher needs to reach the hypervolume that
random search reaches after R evaluations, on a ground truth LINAS does not model.

Objectives (accuracy, MACs) on ofa_mbv3_digits (``bench/search_digits.yaml``: the
demo's training, sandwich 8 epochs, in ``runs/bench_search_digits``; trained first when
missing); hypervolume on (1 - accuracy, MACs / MACs(max arch)) up to (1.1, 1.1).
Accuracy is the "expensive" objective every searcher must evaluate (LINAS validates it
and fits its own surrogate); MACs are exact for everyone.

- ``predictor`` (R = 1000): accuracy = a ground-truth model of the trained supernet:
  nasplat's accuracy predictor (ridge + boosted trees on the one-hot choices AND the
  per-stage MACs / params) fitted on ``--fit-archs`` supernet-evaluated archs. LINAS's
  own surrogate is DyNAS-T's (ridge or RBF SVR on the one-hot choices only), so the
  ground truth is neither its model family nor its features. The truth's held-out
  Kendall tau against the supernet is printed.
- ``supernet`` (R = 200): accuracy through the supernet itself (extract + BN
  recalibration + validation), cached per arch (deterministic), so every searcher pays
  for its own evaluations but the machine evaluates each arch once.

Searchers: linas (DyNAS-T's loop, inner pymoo NSGA-II), nsga2 (Optuna's NSGAIISampler),
pymoo_nsga2 (pymoo's NSGA-II with DyNAS-T's operators), tpe, random, and gp in the
supernet table only (an ask takes seconds; capped at R <= 200). Each run stops once it
reaches the target (or after ``--cap``, default R, evaluations). Seeds 0..S-1 for each
searcher; random's seeds define the target (the median of its final hypervolumes).

Goal (docs/benchmarks.md): LINAS <= 125 evaluations and <= 1/2 of both NSGA-IIs.
Anchor (docs/benchmarks.md): DyNAS-T's LINAS needs about half the evaluations of its NSGA-II
(the LINAS paper, Cummings et al., 2022).

    python -m bench.search_efficiency [--quick] [--objective predictor|supernet|both] [--seeds 5]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today, trained_experiment  # noqa: E402

EXP = Path(__file__).resolve().parent / "search_digits.yaml"
PREDICTOR_SEARCHERS = "linas,nsga2,pymoo_nsga2,tpe,random"
SUPERNET_SEARCHERS = "linas,nsga2,pymoo_nsga2,tpe,gp,random"


class SupernetAccuracy:
    """Arch -> accuracy through the supernet, cached in a CSV (evaluation is deterministic)."""

    def __init__(self, exp: Any, cache: Path):
        from nasplat.data import load_experiment_data
        from nasplat.paths import supernet_checkpoint
        from nasplat.supernet import build_supernet
        from nasplat.supernet.evaluate import SubnetEvaluator

        net = build_supernet(exp.space, checkpoint=supernet_checkpoint(exp.run_dir))
        self.ev = SubnetEvaluator(net, load_experiment_data(exp), calib_images=exp.config.data.calib_images,
                                  calib_batch=exp.config.data.calib_images or 200, seed=exp.config.seed,
                                  channels_last=True)
        self.space = exp.space
        self.path = cache
        self.cache: dict[str, float] = {}
        self.seconds: list[float] = []
        if cache.exists():
            with open(cache, newline="") as f:
                self.cache = {r["arch_id"]: float(r["accuracy"]) for r in csv.DictReader(f)}

    def __call__(self, archs: list[Any]) -> list[float]:
        from nasplat.io import append_csv_rows

        new = []
        for a in archs:
            if a.id not in self.cache:
                ev = self.ev.evaluate(a)
                self.cache[a.id] = ev.accuracy
                self.seconds.append(ev.seconds)
                new.append({"arch_id": a.id, "accuracy": ev.accuracy, "arch": a.to_json()})
        if new:
            append_csv_rows(self.path, new, ["arch_id", "accuracy", "arch"])
        return [self.cache[a.id] for a in archs]


def ground_truth(exp: Any, acc: SupernetAccuracy, n: int) -> tuple[Callable[[list[Any]], list[float]], str]:
    """The predictor objective: nasplat's accuracy predictor fitted on ``n``
    supernet-evaluated archs (80 %; its Kendall tau on the other 20 % is reported)."""
    from scipy.stats import kendalltau

    from nasplat.hw.stage import stratified_archs
    from nasplat.predict import AccuracyPredictor

    archs = stratified_archs(exp.space, n, seed=123)
    y = np.array(acc(archs))
    perm = np.random.default_rng(0).permutation(n)
    tr, te = perm[: int(0.8 * n)], perm[int(0.8 * n):]
    held = AccuracyPredictor(exp.space).fit([archs[i] for i in tr], y[tr])
    tau = kendalltau(y[te], held.predict([archs[i] for i in te])).statistic
    truth = AccuracyPredictor(exp.space).fit(archs, y)
    note = (f"ground truth: nasplat's accuracy predictor (ridge + boosted trees, one-hot + per-stage costs) on "
            f"{n} supernet-evaluated archs (accuracy {y.min():.3f}..{y.max():.3f}); held-out Kendall tau "
            f"{tau:.3f} on {len(te)} archs")
    return (lambda archs: [float(v) for v in truth.predict(archs)]), note


def problem(space: Any) -> Any:
    from nasplat.search.metrics import Metric, MetricContext, make_metric
    from nasplat.search.runner import Problem

    return Problem(space, [Metric("accuracy", "maximize", expensive=True), make_metric("macs", MetricContext(space))])


class _Reached(Exception):
    pass


def run_one(prob: Any, acc_fn: Callable[[list[Any]], list[float]], searcher: str, seed: int, budget: int,
            population: int, inner_evals: int, target: float | None = None) -> list[float]:
    """Hypervolume after each evaluation, stopping at the evaluation that reaches ``target``."""
    import optuna

    from nasplat.search.config import SearchConfig
    from nasplat.search.metrics import hypervolume, pareto_mask
    from nasplat.search.runner import SearchLoop, annotate

    cfg = SearchConfig(searcher=searcher, objectives=["accuracy", "macs"], budget=budget, population=population,
                       linas={"inner_evals": inner_evals, "inner_population": 50})
    front: list[np.ndarray] = []

    def expensive(archs, done, failed=None):
        for i, v in enumerate(acc_fn(list(archs))):
            done(i, {"accuracy": v, "seconds": 0.0})
            if target is not None:  # stop at the evaluation that reaches the target
                pts = np.array(front + [prob.losses(loop.known[archs[i].id]["values"])])
                front[:] = list(pts[pareto_mask(pts)])
                if hypervolume(pts, prob.reference()) >= target - 1e-12:
                    raise _Reached

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=prob.directions)
    loop = SearchLoop(prob, cfg, study, seed=seed, expensive=expensive, quiet=True)
    try:
        return loop.run().hv_history
    except _Reached:
        return annotate(prob, list(loop.known.values()))


def evals_to_reach(hv: list[float], target: float) -> int | None:
    for i, v in enumerate(hv):
        if v >= target - 1e-12:
            return i + 1
    return None


def table(name: str, prob: Any, fn: Callable, ref: int, searchers: list[str], args: argparse.Namespace,
          t_start: float) -> dict[str, Any]:
    runs = {"random": [run_one(prob, fn, "random", 1000 + s, ref, args.population, args.inner_evals)
                       for s in range(args.seeds)]}
    target = float(np.median([h[-1] for h in runs["random"]]))
    print(f"  {name}: random done, target HV {target:.4f} ({time.time() - t_start:.0f} s)", file=sys.stderr,
          flush=True)
    out: dict[str, Any] = {}
    for searcher in searchers:
        cap = min(args.cap or ref, ref, args.tpe_cap if searcher == "tpe" else ref)
        t0 = time.time()
        need = []
        for s in range(args.seeds):
            hv = runs["random"][s] if searcher == "random" else \
                run_one(prob, fn, searcher, s, cap, args.population, args.inner_evals, target)
            need.append(evals_to_reach(hv, target))
            print(f"  {name}: {searcher} seed {s}: {len(hv)} evals, reached after {need[-1]} "
                  f"({time.time() - t_start:.0f} s)", file=sys.stderr, flush=True)
        med = float(np.median([n if n is not None else np.inf for n in need]))
        out[searcher] = {"per_seed": need, "median": med, "cap": ref if searcher == "random" else cap,
                         "seconds": time.time() - t0}
    print(f"\n## objective: {name}  (R = {ref}: target = median random HV after {ref} evals = {target:.4f}; "
          f"population {args.population}, LINAS inner evals {args.inner_evals})")
    print("| searcher | evals to reach (per seed) | median | ÷ Optuna NSGA-II | ÷ pymoo NSGA-II | wall s |")
    print("|---|---|---|---|---|---|")
    for k, v in out.items():
        per = ", ".join(str(n) if n is not None else f">{v['cap']}" for n in v["per_seed"])
        med = v["median"]
        ratios = []
        for base in ("nsga2", "pymoo_nsga2"):
            b = out.get(base, {}).get("median", np.nan)
            ratios.append(f"{med / b:.2f}" if np.isfinite(med) and np.isfinite(b) else "—")
        print(f"| {k} | {per} | {med if np.isfinite(med) else '>' + str(v['cap'])} | {ratios[0]} | {ratios[1]} | "
              f"{v['seconds']:.0f} |")
    return {"ref": ref, "target": target, "searchers": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="search_efficiency", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="R = 200 / 40, 2 seeds, fewer fit archs (minutes)")
    ap.add_argument("--objective", choices=["predictor", "supernet", "both"], default="both")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--ref", type=int, default=None, help="R of the predictor objective (default 1000)")
    ap.add_argument("--supernet-ref", type=int, default=None, help="R of the supernet objective (default 200)")
    ap.add_argument("--searchers", default=None, help=f"default: {PREDICTOR_SEARCHERS} (supernet: + gp)")
    ap.add_argument("--cap", type=int, default=None, help="max evaluations of a non-random run (default R)")
    ap.add_argument("--tpe-cap", type=int, default=500,
                    help="max evaluations of a tpe run (its asks grow with the study: ~0.1-0.5 s each here)")
    ap.add_argument("--population", type=int, default=25)
    ap.add_argument("--inner-evals", type=int, default=10_000)
    ap.add_argument("--fit-archs", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    args.seeds = args.seeds or (2 if args.quick else 5)
    ref = args.ref or (200 if args.quick else 1000)
    sref = args.supernet_ref or (40 if args.quick else 200)
    fit_archs = args.fit_archs or (60 if args.quick else 300)
    if args.quick:
        args.inner_evals = min(args.inner_evals, 2000)

    import torch

    torch.set_num_threads(1)
    from nasplat.paths import supernet_checkpoint

    exp = trained_experiment(EXP, args.quick)
    print(f"# search_efficiency  {today()}  {machine()}")
    print(f"space {exp.space.config.name}; objectives (accuracy, MACs); seeds {args.seeds}; "
          f"weights {supernet_checkpoint(exp.run_dir)}")
    t_start = time.time()
    acc = SupernetAccuracy(exp, exp.run_dir / "bench" / f"accuracy_calib{exp.config.data.calib_images}.csv")
    prob = problem(exp.space)
    results: dict[str, Any] = {}
    if args.objective in ("predictor", "both"):
        truth, note = ground_truth(exp, acc, fit_archs)
        print(note)
        names = (args.searchers or PREDICTOR_SEARCHERS).split(",")
        results["predictor"] = table("predictor", prob, truth, ref, [s for s in names if s], args, t_start)
    if args.objective in ("supernet", "both"):
        names = (args.searchers or SUPERNET_SEARCHERS).split(",")
        results["supernet"] = table("supernet", prob, acc, sref, [s for s in names if s], args, t_start)
    if acc.seconds:
        print(f"\nsupernet evaluations this run: {len(acc.seconds)}, median {np.median(acc.seconds):.2f} s each")
    print(f"total {time.time() - t_start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
