"""``subnets``: accuracy of random subnets of an experiment's trained supernet, the
figure the examples' accuracy bars quote (e.g. ``examples/digits_ofa_ps.yaml``: >= 95%
on 20 random subnets; ``examples/digits_elasticvit.yaml``: >= 95%).

    python -m bench.subnets EXPERIMENT [--n 20] [--seed 0]

Trains the supernet first when the run has none (``nasplat train``). Each subnet is
drawn uniformly from the space with the given seed, extracted, its BN statistics
recalibrated (the experiment's ``data.calib_images``), and evaluated on the whole val
split. A PC-DARTS search supernet has no subnets to sample: its figure is the retrained
derived network's, ``nasplat train`` of the ``*_retrain`` example (printed there).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, random_subnet_accuracies, today, trained_experiment  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nasplat bench subnets", description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", help="experiment YAML")
    ap.add_argument("--n", type=int, default=20, help="random subnets (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    args = ap.parse_args(argv)

    import nasplat
    from nasplat.supernet.bn import calibration_batches

    header = f"# subnets  {today()}  {machine()}"
    t0 = time.perf_counter()
    exp = trained_experiment(args.experiment)
    net, data = nasplat.load_supernet(exp), nasplat.load_data(exp)
    calib = calibration_batches(data, exp.config.data.calib_images, args.seed)  # drawn once for every subnet
    drawn = random_subnet_accuracies(net, exp, data, calib, args.n, np.random.default_rng(args.seed))
    acc = np.array([a for _, a in drawn])
    print(header)
    print(f"{exp.config.name} ({exp.space.config.name}), {args.n} random subnets (seed {args.seed}), "
          f"BN recalibrated on {exp.config.data.calib_images} images, val split of {len(data.val)}")
    print("\n| arch | MACs | accuracy |\n|---|---|---|")
    for arch, a in drawn:
        print(f"| {arch.id} | {exp.space.macs(arch) / 1e6:.2f}M | {a:.2%} |")
    print(f"\nmin {acc.min():.2%}, mean {acc.mean():.2%}, max {acc.max():.2%}  ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
