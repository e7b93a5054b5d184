"""search_efficiency: evaluations each searcher needs to reach the hypervolume that
random search reaches after ``--ref`` (1000) evaluations.

Two objectives on ofa_mbv3_digits, both (accuracy, MACs) with hypervolume on
(1 - accuracy, MACs / MACs(max arch)) up to (1.1, 1.1):

- ``predictor``: accuracy from an accuracy predictor (RBF SVR) fitted on real
  supernet accuracies of ``--fit-archs`` archs of the trained bench supernet, so
  one evaluation is cheap and 1000s are affordable;
- ``supernet``: accuracy through the supernet itself (extract + BN recalibration on
  ``--calib`` images + validation), cached per arch (evaluation is deterministic),
  so every searcher pays for its own evaluations but the machine evaluates each arch
  once.

For LINAS the accuracy is the "expensive" objective (validated), MACs the cheap one.
Goal (issue 5): the best searcher <= 125 evaluations and <= half of Optuna NSGA-II's.

    python -m bench.search_efficiency [--quick] [--objective predictor|supernet|both]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today  # noqa: E402

EXP = Path(__file__).resolve().parent / "search_digits.yaml"


class Accuracy:
    """Arch -> accuracy with a CSV cache (supernet evaluation is deterministic)."""

    def __init__(self, exp: Any, calib: int, val: int | None, cache: Path):
        from nasplat.search.evaluator import SupernetEvaluator
        from nasplat.search.stage import evaluator_init, load_supernet_weights

        cfg = exp.config.search.model_copy(update={"calib_images": calib, "val_images": val})
        self.ev = SupernetEvaluator(**evaluator_init(exp, cfg, load_supernet_weights(exp)))
        self.cache_path = cache
        self.cache: dict[str, float] = {}
        self.seconds: list[float] = []
        self.cache_archs: list[Any] = []
        if cache.exists():
            with open(cache) as f:
                rows = list(csv.DictReader(f))
            self.cache = {r["arch_id"]: float(r["accuracy"]) for r in rows}
            self.cache_archs = [exp.space.arch(json.loads(r["arch"])) for r in rows]

    def __call__(self, archs: list[Any]) -> list[float]:
        out, new = [], []
        for a in archs:
            if a.id not in self.cache:
                r = self.ev.evaluate(a.to_json())
                self.cache[a.id] = r["accuracy"]
                self.seconds.append(r["seconds"])
                new.append({"arch_id": a.id, "accuracy": r["accuracy"], "arch": a.to_json()})
            out.append(self.cache[a.id])
        if new:
            from nasplat.io import append_csv_rows

            append_csv_rows(self.cache_path, new, ["arch_id", "accuracy", "arch"])
        return out


def make_problem(space: Any, acc_fn: Any) -> Any:
    from nasplat.search.metrics import Metric, MetricContext, make_metric
    from nasplat.search.runner import Problem

    return Problem(space, [Metric("accuracy", "maximize", expensive=True), make_metric("macs", MetricContext(space))]), acc_fn


class _Reached(Exception):
    pass


def run_one(problem: Any, acc_fn: Any, searcher: str, seed: int, budget: int, population: int,
            inner_evals: int, target: float | None = None) -> list[float]:
    """Hypervolume after each evaluation; stops after the round where ``target`` is reached."""
    from nasplat.search.config import SearchConfig
    from nasplat.search.metrics import hypervolume
    from nasplat.search.runner import SearchLoop, annotate

    cfg = SearchConfig(searcher=searcher, budget=budget, population=population,
                       linas={"inner_evals": inner_evals, "inner_population": 50})

    def expensive(archs, done):
        for i, v in enumerate(acc_fn(list(archs))):
            done(i, {"accuracy": v, "seconds": 0.0})

    def on_round():
        if target is not None:
            pts = np.array([problem.losses(r["values"]) for r in loop.known.values() if r["feasible"]])
            if len(pts) and hypervolume(pts, problem.reference()) >= target - 1e-12:
                raise _Reached

    study = optuna.create_study(directions=problem.directions)
    loop = SearchLoop(problem, cfg, study, seed, expensive=expensive, on_round=on_round, quiet=True)
    try:
        return loop.run().hv_history
    except _Reached:
        return annotate(problem, list(loop.known.values()))


def evals_to_reach(hv: list[float], target: float) -> int | None:
    for i, v in enumerate(hv):
        if v >= target - 1e-12:
            return i + 1
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="search_efficiency", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer evaluations (minutes on 2 cores)")
    ap.add_argument("--objective", choices=["predictor", "supernet", "both"], default="both")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ref", type=int, default=None, help="random-search evaluations defining the target")
    ap.add_argument("--searchers", default="linas,nsga2,tpe,gp,random")
    ap.add_argument("--cap", type=int, default=None, help="max evaluations per run of a non-random searcher")
    ap.add_argument("--gp-cap", type=int, default=150)
    ap.add_argument("--population", type=int, default=25)
    ap.add_argument("--inner-evals", type=int, default=2000)
    ap.add_argument("--fit-archs", type=int, default=150)
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--supernet-ref", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the per-run JSON here")
    args = ap.parse_args(argv)
    ref = args.ref or (300 if args.quick else 1000)
    cap = args.cap or ref
    sref = args.supernet_ref or (150 if args.quick else ref)

    import torch

    torch.set_num_threads(1)
    from nasplat.experiment import load_experiment
    from nasplat.search.searchers import fit_surrogate

    exp = load_experiment(EXP)
    space = exp.space
    cache_dir = exp.run_dir / "bench"
    print(f"# search_efficiency  {today()}  {machine()}")
    print(f"space {space.config.name}; objectives (accuracy, MACs); seeds {args.seeds}; "
          f"weights {exp.run_dir / 'supernet' / 'supernet.safetensors'}")
    t_start = time.time()
    acc = Accuracy(exp, args.calib, None, cache_dir / f"acc_calib{args.calib}.csv")
    objectives: list[tuple[str, Any, int]] = []
    if args.objective in ("predictor", "both"):
        from nasplat.hw.stage import stratified_archs

        fit = stratified_archs(space, args.fit_archs, seed=123)
        if len(acc.cache_archs) >= args.fit_archs:  # reuse real evaluations already made
            fit = acc.cache_archs[: args.fit_archs]
        y = np.array(acc(fit))
        f = fit_surrogate(space, space.encode_batch(fit), y)
        pred = lambda archs: [float(v) for v in np.clip(f(space.encode_batch(archs)), 0, 1)]
        print(f"predictor: RBF SVR on {len(fit)} supernet-evaluated archs (accuracy {y.min():.3f}..{y.max():.3f})")
        objectives.append(("predictor", pred, ref))
    if args.objective in ("supernet", "both"):
        objectives.append(("supernet", acc, sref))
    results: dict[str, Any] = {}
    for name, fn, r in objectives:
        problem, _ = make_problem(space, fn)
        runs: dict[str, list[list[float]]] = {}
        rcap = cap if name == "predictor" else min(cap, r)
        for s in range(args.seeds):
            runs.setdefault("random", []).append(run_one(problem, fn, "random", 1000 + s, r, args.population, 100))
            print(f"  {name}: random seed {s} done ({time.time() - t_start:.0f}s)", file=sys.stderr, flush=True)
        target = float(np.median([h[-1] for h in runs["random"]]))
        table = {}
        for searcher in [x for x in args.searchers.split(",") if x]:
            t0 = time.time()
            need = []
            for s in range(args.seeds):
                if searcher == "random":
                    hv = runs["random"][s]
                else:
                    budget = min(rcap, args.gp_cap) if searcher == "gp" else rcap
                    hv = run_one(problem, fn, searcher, s, budget, args.population, args.inner_evals, target)
                    runs.setdefault(searcher, []).append(hv)
                need.append(evals_to_reach(hv, target))
                print(f"  {name}: {searcher} seed {s}: {len(hv)} evals, reached after {need[-1]} "
                      f"({time.time() - t_start:.0f}s)", file=sys.stderr, flush=True)
            budget_used = rcap if searcher != "gp" else min(rcap, args.gp_cap)
            ok = [n for n in need if n is not None]
            med = float(np.median([n if n is not None else np.inf for n in need]))
            table[searcher] = {"per_seed": need, "median": med, "cap": budget_used,
                               "final_hv": [h[-1] for h in runs[searcher]], "evals_run": [len(h) for h in runs[searcher]], "seconds": time.time() - t0,
                               "reached": len(ok)}
        results[name] = {"ref_evals": r, "target_hv": target, "searchers": table}
        print(f"\n## objective: {name}  (target = median random HV after {r} evals = {target:.4f})")
        print("| searcher | evals to reach (per seed) | median | ÷ NSGA-II | HV at stop (median) | wall s |")
        print("|---|---|---|---|---|---|")
        nsga = table.get("nsga2", {}).get("median", np.nan)
        for k, v in table.items():
            per = ", ".join(str(n) if n is not None else f">{v['cap']}" for n in v["per_seed"])
            med = v["median"]
            ratio = med / nsga if np.isfinite(med) and np.isfinite(nsga) else float("nan")
            print(f"| {k} | {per} | {med if np.isfinite(med) else '>' + str(v['cap'])} | "
                  f"{ratio:.2f} | {np.median(v['final_hv']):.4f} | {v['seconds']:.0f} |")
    if acc.seconds:
        print(f"\nsupernet evaluations this run: {len(acc.seconds)}, median {np.median(acc.seconds):.2f} s each "
              f"(calib {args.calib} images); total {time.time() - t_start:.0f}s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
