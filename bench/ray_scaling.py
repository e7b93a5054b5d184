"""ray_scaling: supernet-based subnet evaluations per second with 2 evaluator actors
divided by 1 actor (the search's asynchronous Ray evaluator pool: an arch goes to
whichever evaluator is free; 1 torch thread per actor).

Both pools are started once (weights through the object store, sent to each actor by
a method call), then rounds alternate 1-actor and 2-actor pools over the same archs
(stratified over MACs); the ratio is the median over rounds. Goal (docs/benchmarks.md, with the
asynchronous pool): >= 1.9 on a 2-core machine (>= 1.7 before the pool was asynchronous).

    python -m bench.ray_scaling [--quick] [--archs N] [--rounds R]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today, trained_experiment  # noqa: E402

EXP = Path(__file__).resolve().parent / "search_digits.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ray_scaling")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--archs", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--address", default=None)
    args = ap.parse_args(argv)
    n = args.archs or (12 if args.quick else 24)
    rounds = args.rounds or (3 if args.quick else 5)

    import ray

    from nasplat.hw.stage import stratified_archs
    from nasplat.search.evaluator import EvaluatorPool
    from nasplat.search.stage import ensure_ray, evaluator_init, load_supernet_weights

    header = f"# ray_scaling  {today()}  {machine()}"  # the load average before the measurement
    exp = trained_experiment(EXP, quick=args.quick)  # --quick: a 2-epoch supernet of its own (path check only)
    cfg = exp.config.search.model_copy(update={"calib_images": args.calib})
    started = ensure_ray(args.address, 3)  # 1 + 2 actors alive at once (only one pool busy at a time)
    try:
        weights = ray.put(load_supernet_weights(exp))
        init = evaluator_init(exp, cfg, weights)
        pools = {1: EvaluatorPool(1, init), 2: EvaluatorPool(2, init)}
        for p in pools.values():
            p.locations()  # wait for the actors to be built
        archs = stratified_archs(exp.space, n, seed=11)
        pools[1].map(archs[:2])  # warm-up
        pools[2].map(archs[:4])
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for w in (1, 2):
                t0 = time.perf_counter()
                res = pools[w].map(archs)
                rates[w].append(len(res) / (time.perf_counter() - t0))
        ratio = [b / a for a, b in zip(rates[1], rates[2])]
        print(header)
        print(f"Ray {ray.__version__}, cluster CPUs {ray.cluster_resources().get('CPU')}; {n} archs of "
              f"{exp.space.config.name} per round (calib {args.calib} images, full val split), {rounds} rounds")
        print("\n| workers | evals/s per round | median evals/s |")
        print("|---|---|---|")
        for w in (1, 2):
            print(f"| {w} | {', '.join(f'{r:.2f}' for r in rates[w])} | {np.median(rates[w]):.2f} |")
        print(f"\nratio 2 ÷ 1 per round: {', '.join(f'{r:.2f}' for r in ratio)}; median {np.median(ratio):.2f} "
              f"(goal >= 1.9)")
        for p in pools.values():
            p.shutdown()
    finally:
        if started:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
