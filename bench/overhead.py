"""``overhead``: training-step time of a subnet run inside the elastic supernet ÷ the same
subnet extracted as a static network (DESIGN §9).

A train step = zero_grad, forward, cross-entropy, backward, SGD (momentum 0.9,
Nesterov) step. For the max, a mid (middle choice everywhere) and the min subnet of
``ofa_mbv3_small`` at 32×32 and 64×64, batch 64: A (supernet, subnet active) and B
(static extract) are timed alternately in one process, step by step, and the figure is
the median of the per-pair ratios A/B (the machine is shared and noisy; medians of
interleaved pairs cancel most of the drift). Anchor (OFA's own code, same kind of
machine): max 1.00–1.01, mid 1.03, min 1.07–1.08. Goal: ≤ 1.01 / 1.02 / 1.04.

``python -m bench.overhead [--quick] [--sizes 32,64] [--steps N] [--threads 2]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench._common import machine, today

GOALS = {"max": 1.01, "mid": 1.02, "min": 1.04}
ANCHOR = {"max": "1.00–1.01", "mid": "1.03", "min": "1.07–1.08"}


def mid_arch(space):
    values = {}
    for p in space.params:
        ch = sorted(p.choices)
        values[p.name] = ch[(len(ch) - 1) // 2] if len(ch) > 1 else ch[0]
    return space.arch(values)


def _step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def measure(space, arch, size: int, steps: int, warmup: int, batch: int = 64, channels_last: bool = False,
            clock=time.perf_counter):
    from nasplat.supernet import build_supernet

    torch.manual_seed(0)
    net = build_supernet(space)
    net.set_active(arch)
    static = net.extract(arch)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net, static = net.to(memory_format=fmt).train(), static.to(memory_format=fmt).train()
    opts = [torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, nesterov=True) for m in (net, static)]
    x = torch.randn(batch, space.config.input_channels, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, space.config.num_classes, (batch,))
    ratios, ta, tb = [], [], []
    for i in range(warmup + steps):
        order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate which goes first
        t = {}
        for k in order:
            m = (net, static)[k]
            t0 = clock()
            _step(m, opts[k], x, y)
            t[k] = clock() - t0
        if i >= warmup:
            ta.append(t[0])
            tb.append(t[1])
            ratios.append(t[0] / t[1])
    return statistics.median(ratios), statistics.median(ta), statistics.median(tb)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (a few minutes on 2 cores)")
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--space", default="ofa_mbv3_small")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time (use with --threads 1 on a loaded machine)")
    args = ap.parse_args(argv)
    from nasplat.experiment import SHIPPED_SPACES
    from nasplat.space import load_space

    torch.set_num_threads(args.threads)
    space = load_space(SHIPPED_SPACES / f"{args.space}.yaml")
    steps = args.steps or (15 if args.quick else 60)
    archs = {"max": space.max_arch(), "mid": mid_arch(space), "min": space.min_arch()}
    print(f"# overhead — {machine()}, {today()}")
    print(f"space {args.space}, batch 64, {steps} interleaved step pairs per row, "
          f"{'channels_last' if args.channels_last else 'NCHW'}, {args.threads} thread(s), {args.clock} clock")
    print("| input | subnet | MMACs | supernet step ms | static step ms | ratio (median of pairs) | goal | OFA |")
    print("|---|---|---|---|---|---|---|---|")
    met = True
    for size in [int(s) for s in args.sizes.split(",")]:
        for name, arch in archs.items():
            clock = time.perf_counter if args.clock == "wall" else time.process_time
            r, a, b = measure(space, arch, size, steps, 2, channels_last=args.channels_last, clock=clock)
            ok = r <= GOALS[name]
            met &= ok
            macs = space.macs(arch) * (size / space.resolution(arch)) ** 2 / 1e6  # ~ scales with area
            print(f"| {size}×{size} | {name} | {macs:.1f} | {a * 1e3:.1f} | {b * 1e3:.1f} | {r:.3f} | "
                  f"≤ {GOALS[name]} {'met' if ok else 'missed'} | {ANCHOR[name]} |", flush=True)
    print(f"goals {'met' if met else 'not all met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
