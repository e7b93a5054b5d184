"""eval_cost: seconds to evaluate one subnet through the supernet (extract + BN
recalibration + validation) and the rank fidelity of the fast path.

Reference (OFA's protocol): BN statistics recalibrated on 2000 training images in
batches of 200. Digits has ~1440 training images, so the 2000 are drawn with
replacement from the training split with random +-1 px shifts (OFA also recalibrates
on augmented training images). Fast path (what ``nasplat search`` uses): the first
``--calib`` calibration images in batches of ``--batch``. Both validate on the whole
validation split. Fidelity: Kendall tau between the two paths' accuracies over
``--archs`` subnets stratified over MACs. Timings alternate reference and fast path per
subnet in one process (medians).

OFA anchor on this kind of machine (32x32): extract 28 ms; recalibration over 2000
images 0.65 s (min subnet) / 1.8 s (mid) / 5.9 s (max). Goal: <= half per subnet at
tau >= 0.95.

    python -m bench.eval_cost [--quick] [--exp bench/eval_cost_small.yaml]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today  # noqa: E402

OFA = {"min": 0.028 + 0.65, "mid": 0.028 + 1.8, "max": 0.028 + 5.9}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="eval_cost")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--exp", default=str(Path(__file__).resolve().parent / "eval_cost_small.yaml"))
    ap.add_argument("--archs", type=int, default=None)
    ap.add_argument("--calib", default="250,500", help="fast-path calibration sizes to try")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    n_archs = args.archs or (30 if args.quick else 50)

    import torch
    from scipy.stats import kendalltau

    torch.set_num_threads(args.threads)
    from nasplat.experiment import load_experiment
    from nasplat.hw.stage import stratified_archs
    from nasplat.search.stage import load_supernet_weights
    from nasplat.supernet import build_supernet, recalibrate_bn, resize
    from nasplat.data import load_experiment_data

    exp = load_experiment(args.exp)
    space = exp.space
    net = build_supernet(space)
    from nasplat.errors import UserError

    try:
        net.load_state_dict({k: torch.from_numpy(v) for k, v in load_supernet_weights(exp).items()})
        trained = True
    except UserError:  # timings do not depend on the weights; fidelity does
        torch.manual_seed(0)
        trained = False
    net.eval()
    data = load_experiment_data(exp)
    tx = data.train.x  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(tx), 2000)
    ref_imgs = tx[torch.from_numpy(idx)].clone()
    for i, (dx, dy) in enumerate(rng.integers(-1, 2, size=(2000, 2))):
        ref_imgs[i] = torch.roll(ref_imgs[i], shifts=(int(dy), int(dx)), dims=(-2, -1))
    ref_batches = list(ref_imgs.split(200))
    sizes = [int(s) for s in args.calib.split(",")]
    fast_batches = {n: data.calib_batches(args.batch, n) for n in sizes}
    val = [(x, y) for x, y, _ in data.batches("val", 500)]

    def evaluate(arch, batches):
        t0 = time.perf_counter()
        static = net.extract(arch)
        t1 = time.perf_counter()
        r = space.resolution(arch)
        recalibrate_bn(static, batches, r)
        t2 = time.perf_counter()
        static.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val:
                correct += int((static(resize(x, r)).argmax(1) == y).sum())
                total += len(y)
        t3 = time.perf_counter()
        return correct / total, (t1 - t0, t2 - t1, t3 - t2)

    archs = stratified_archs(space, n_archs, seed=7)
    acc = {"ref": [], **{n: [] for n in sizes}}
    for a in archs:
        acc["ref"].append(evaluate(a, ref_batches)[0])
        for n in sizes:
            acc[n].append(evaluate(a, fast_batches[n])[0])
    lo, hi = space.min_arch(), space.max_arch()
    mid = sorted(archs, key=space.macs)[len(archs) // 2]
    reps = 3 if args.quick else 5
    timing = {}
    for name, a in (("min", lo), ("mid", mid), ("max", hi)):
        t = {"ref": [], **{n: [] for n in sizes}}
        for _ in range(reps):  # alternate the paths
            t["ref"].append(evaluate(a, ref_batches)[1])
            for n in sizes:
                t[n].append(evaluate(a, fast_batches[n])[1])
        timing[name] = {k: np.median(np.array(v), axis=0) for k, v in t.items()}
    print(f"# eval_cost  {today()}  {machine()}")
    print(f"space {space.config.name} at {data.resolution}x{data.resolution}, {len(archs)} subnets stratified over MACs, "
          f"validation {sum(len(y) for _, y in val)} images; weights: "
          f"{str(exp.run_dir) + '/supernet' if trained else 'UNTRAINED (timings only; tau not meaningful)'}")
    print("\n| subnet | MMACs | path | extract s | recal s | val s | total s | OFA extract+recal s | ÷ OFA |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, a in (("min", lo), ("mid", mid), ("max", hi)):
        for k, v in timing[name].items():
            label = "reference 2000 imgs / bs 200" if k == "ref" else f"fast {k} imgs / bs {args.batch}"
            tot = float(v.sum())
            print(f"| {name} | {space.macs(a) / 1e6:.1f} | {label} | {v[0]:.3f} | {v[1]:.3f} | {v[2]:.3f} | "
                  f"{tot:.3f} | {OFA[name]:.3f} | {tot / OFA[name]:.2f} |")
    print("\n| fast path | Kendall tau vs reference | max abs acc diff (pt) |")
    print("|---|---|---|")
    for n in sizes:
        tau = kendalltau(acc["ref"], acc[n]).statistic
        diff = 100 * np.max(np.abs(np.array(acc["ref"]) - np.array(acc[n])))
        print(f"| {n} imgs / bs {args.batch} | {tau:.3f} | {diff:.2f} |")
    print(f"\naccuracy range (reference): {min(acc['ref']):.3f}..{max(acc['ref']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
