"""search_loop: the search loop's own cost at 1000 trials, and two whole searches.

1. In process: ``SearchLoop`` with analytic objectives only (MACs, params on
   ofa_mbv3_small, NSGA-II, population 50, the default journal study) for ``--trials``
   distinct archs; the time of each block of 100 trials shows whether the cost grows with
   the study. Goal: <= 10 ms per trial at 1000 trials, flat.
2. ``nasplat search`` (a subprocess, wall time including start-up) of the same problem.
   Goal: <= 30 s for 1000 trials on 2 cores (6 min 15 s when Optuna's RDB storage re-read every trial).
3. ``nasplat search`` with ``accuracy: predictor`` and MACs for 1000 evaluations (MACs,
   not a latency predictor: the shipped one describes one machine only and this part must
   run anywhere). The accuracy predictor is fitted by
   ``nasplat predictor fit --accuracy --from`` on a synthetic accuracy of 300 archs (a
   smooth function of the per-stage MACs; this part times the loop, not search quality).
   Goal: <= 2 min and no arch id twice among the COMPLETE trials in trials.csv.

    python -m bench.search_loop [--quick] [--trials 1000] [--searcher nsga2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def in_process(trials: int, searcher: str, folder: Path) -> tuple[list[float], list[int]]:
    """Seconds and asks (new archs + repeats answered from the records) per block of 100
    evaluated archs of the loop alone (the study in a journal file)."""
    import optuna

    from nasplat.search.config import SearchConfig
    from nasplat.search.metrics import MetricContext, make_metric
    from nasplat.search.runner import Problem, SearchLoop
    from nasplat.search.storage import StudyStorage
    from nasplat.space import load_space

    space = load_space(REPO / "search_spaces" / "ofa_mbv3_small.yaml")
    ctx = MetricContext(space)
    prob = Problem(space, [make_metric("macs", ctx), make_metric("params", ctx)])
    st = StudyStorage(str(folder / "loop.journal"))
    study = optuna.create_study(storage=st.storage, directions=prob.directions)
    marks = [time.perf_counter()]
    blocks: list[float] = []
    asks: list[int] = []
    done = 0
    while done < trials:  # 100 trials at a time on the same study
        cfg = SearchConfig(searcher=searcher, objectives=["macs", "params"], budget=min(trials, done + 100),
                           population=50)
        n0 = len(study.trials)
        SearchLoop(prob, cfg, study, seed=done, quiet=True, persist=st.flush).run()
        done = min(trials, done + 100)
        marks.append(time.perf_counter())
        blocks.append(marks[-1] - marks[-2])
        asks.append(len(study.trials) - n0)
    return blocks, asks


def experiment(folder: Path, name: str, search: dict, **extra) -> Path:
    exp = {"name": name, "seed": 0, "output_dir": str(folder / "runs"), "space": "ofa_mbv3_small",
           "data": {"name": "digits", "resolution": 32}, "search": search, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def nasplat(*args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "nasplat.cli", *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"nasplat {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def synthetic_accuracy_csv(path: Path, n: int) -> None:
    from nasplat.hw.stage import stratified_archs
    from nasplat.space import load_space

    space = load_space(REPO / "search_spaces" / "ofa_mbv3_small.yaml")
    archs = stratified_archs(space, n, seed=3)
    sc = space.stage_costs_batch(space.encode_batch(archs))[:, :, 0] / 1e6
    acc = 0.6 + 0.35 * np.tanh((sc * np.linspace(0.5, 1.5, sc.shape[1])).sum(1) / 40)
    rows = ["arch_id,arch,accuracy"] + [f'{a.id},"{a.to_json().replace(chr(34), chr(34) * 2)}",{v!r}'
                                        for a, v in zip(archs, acc.tolist())]
    path.write_text("\n".join(rows) + "\n")


def complete_trials(run: Path) -> tuple[int, int]:
    import csv

    with open(run / "search" / "trials.csv", newline="") as f:
        ids = [r["arch_id"] for r in csv.DictReader(f)]
    return len(ids), len(set(ids))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="search_loop", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 trials")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--searcher", default="nsga2")
    args = ap.parse_args(argv)
    trials = args.trials or (200 if args.quick else 1000)
    print(f"# search_loop  {today()}  {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        blocks, asks = in_process(trials, args.searcher, folder)
        print(f"\n1. loop alone ({args.searcher}, macs + params, ofa_mbv3_small, {trials} trials): "
              f"{sum(blocks):.1f} s, {1000 * sum(blocks) / trials:.1f} ms per evaluated arch, "
              f"{1000 * sum(blocks) / sum(asks):.1f} ms per ask")
        print("   by block of 100 archs, ms per ask (asks): " +
              ", ".join(f"{1000 * b / a:.1f} ({a})" for b, a in zip(blocks, asks)))
        exp = experiment(folder, "analytic", {"searcher": args.searcher, "objectives": ["macs", "params"],
                                              "budget": trials, "population": 50})
        wall = nasplat("search", str(exp))
        n, distinct = complete_trials(folder / "runs" / "analytic")
        print(f"\n2. `nasplat search` analytic, {trials} trials: {wall:.1f} s wall (goal <= 30 s at 1000); "
              f"trials.csv {n} rows, {distinct} distinct archs")
        csv_path = folder / "acc.csv"
        synthetic_accuracy_csv(csv_path, 300)
        exp = experiment(folder, "predicted", {"searcher": args.searcher, "accuracy": "predictor",
                                               "objectives": ["accuracy", "macs"], "budget": trials,
                                               "population": 50})
        fit = nasplat("predictor", "fit", str(exp), "--accuracy", "--from", str(csv_path), "--quiet")
        wall = nasplat("search", str(exp))
        n, distinct = complete_trials(folder / "runs" / "predicted")
        print(f"\n3. `nasplat search` accuracy: predictor + macs, {trials} "
              f"evaluations: {wall:.1f} s wall (goal <= 120 s at 1000; the accuracy predictor's fit took "
              f"{fit:.1f} s before); trials.csv {n} rows, {distinct} distinct archs "
              f"({'no arch twice' if n == distinct else 'REPEATED ARCHS'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
