"""Benchmark ``export``: ONNX Runtime latency ÷ torch eager latency of the same static
subnet, batch 1, 2 threads (docs/benchmarks.md; OFA's exported max subnet: 0.25 at 32x32, 0.47
at 224x224 on this kind of machine — lower is better).

    python -m bench.export            # 10 archs per space (max subnet first), 3 processes
    python -m bench.export --quick    # 3 archs, 1 process

Each process alternates torch eager and ORT runs of one arch (round by round) so that
machine noise hits both alike, and reports the ratio of the medians; the figure is
the median over processes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench._common import machine, today

REPO = Path(__file__).resolve().parent.parent
SPACES = {"32x32": "ofa_mbv3_small", "224x224": "ofa_mbv3"}


def one_process(space_name: str, n_archs: int, rounds: int, threads: int) -> list[dict]:
    import torch

    from nasplat.export import to_onnx
    from nasplat.hw.runner import make_session
    from nasplat.hw.stage import stratified_archs
    from nasplat.space import load_space
    from nasplat.supernet import build_supernet

    torch.set_num_threads(threads)
    space = load_space(REPO / "search_spaces" / f"{space_name}.yaml")
    net = build_supernet(space).eval()
    archs = [space.max_arch()] + [a for a in stratified_archs(space, n_archs + 2, 5)[2:]][: n_archs - 1]
    settings = {"intra_op_threads": threads, "inter_op_threads": 1, "graph_optimization": "all"}
    out = []
    for a in archs:
        r = space.resolution(a)
        model = net.extract(a).eval()
        x = torch.randn(1, space.config.input_channels, r, r)
        sess = make_session(to_onnx(model, tuple(x.shape)).data, settings)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        t_torch, t_ort = [], []
        with torch.inference_mode():
            for _ in range(5):
                model(x)
                sess.run(None, feed)
            for _ in range(rounds):
                t0 = time.perf_counter()
                model(x)
                t_torch.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                sess.run(None, feed)
                t_ort.append(time.perf_counter() - t0)
        out.append({"arch_id": a.id, "max": a == space.max_arch(), "macs": space.macs(a), "resolution": r,
                    "torch_ms": float(np.median(t_torch) * 1e3), "ort_ms": float(np.median(t_ort) * 1e3),
                    "ratio": float(np.median(t_ort) / np.median(t_torch))})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.export", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--archs", type=int, default=None)
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spaces", default="32x32,224x224")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n_archs = args.archs or (3 if args.quick else 10)
    procs = args.processes or (1 if args.quick else 3)
    rounds = args.rounds or (20 if args.quick else 40)
    if args._child:
        print(json.dumps(one_process(args._child, n_archs, rounds, args.threads)))
        return 0
    print(f"export: ORT ÷ torch eager, batch 1, {args.threads} threads, {n_archs} archs, {procs} process(es), "
          f"{rounds} interleaved rounds")
    print(f"machine: {machine()}; date {today()}")
    print("\n| input | space | subnet | MMACs | torch ms | ORT ms | ORT ÷ torch (median of processes) | anchor |")
    print("|---|---|---|---|---|---|---|---|")
    anchors = {"32x32": 0.25, "224x224": 0.47}
    for label in args.spaces.split(","):
        space = SPACES[label]
        runs = []
        for _ in range(procs):
            cmd = [sys.executable, "-m", "bench.export", "--_child", space, "--archs", str(n_archs),
                   "--rounds", str(rounds), "--threads", str(args.threads)]
            res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        for j, first in enumerate(runs[0]):
            ratio = float(np.median([r[j]["ratio"] for r in runs]))
            tm = float(np.median([r[j]["torch_ms"] for r in runs]))
            om = float(np.median([r[j]["ort_ms"] for r in runs]))
            name = "max" if first["max"] else first["arch_id"]
            print(f"| {label} | {space} | {name} | {first['macs'] / 1e6:.1f} | {tm:.3f} | {om:.3f} | {ratio:.3f} | "
                  f"{anchors[label] if first['max'] else ''} |", flush=True)
        allr = [float(np.median([r[j]["ratio"] for r in runs])) for j in range(len(runs[0]))]
        print(f"| {label} | {space} | median of {len(allr)} archs | | | | {np.median(allr):.3f} | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
