"""pcdarts_memory: memory and time of one PC-DARTS weight step, K=4 vs K=1.

One weight step = forward + backward + SGD (momentum 0.9, wd 3e-4) of the search
network of ``search_spaces/darts.yaml`` (8 cells, C=16, 4 nodes, 8 DARTS ops), 32x32
inputs, at batch 32 and 64. Each (K, batch) runs in fresh processes; in each, one
warm-up step, then per step: "memory added" = peak RSS during the step (VmHWM, reset
through /proc/self/clear_refs) minus RSS before it. The children run with
MALLOC_MMAP_THRESHOLD_=65536 so glibc hands freed activations back to the OS and RSS
follows live memory (otherwise a warm process reuses its heap and the step "adds"
almost nothing). Time: medians of wall and CPU seconds per step; the K=4 / K=1 time
ratio is also measured with both networks alternating in one process.

    python -m bench.pcdarts_memory [--quick] [--procs 5 --steps 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANCHOR = {  # official PC-DARTS code, a 2-core Xeon like this one (docs/benchmarks.md): MiB added, step s
    (4, 32): (1497, 2.23), (1, 32): (4775, 4.57), (4, 64): (2983, 3.52), (1, 64): (9506, 12.41)}


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _setup(k: int, batch: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    from nasplat.space import load_space
    from nasplat.supernet.darts_cell import PCDartsNetwork

    torch.manual_seed(0)
    space = load_space(REPO / "search_spaces/darts.yaml")
    net = PCDartsNetwork(space, k).train()
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    params = net.weight_parameters()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward(inputs=params)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    return step, sum(p.numel() for p in params)


def child(k: int, batch: int, steps: int, threads: int, warmup: int = 1) -> dict:
    import gc

    step, n_params = _setup(k, batch, threads)
    for _ in range(warmup):  # optimizer state, allocator, oneDNN primitives
        step()
    out = {"k": k, "batch": batch, "params": n_params, "mem_mib": [], "wall_s": [], "cpu_s": []}
    for _ in range(steps):
        gc.collect()
        base = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        t, c = time.perf_counter(), time.process_time()
        step()
        out["wall_s"].append(time.perf_counter() - t)
        out["cpu_s"].append(time.process_time() - c)
        out["mem_mib"].append((_status("VmHWM") - base) / 2**20)
    return out


def child_interleaved(batch: int, steps: int, threads: int) -> dict:
    s4, _ = _setup(4, batch, threads)
    s1, _ = _setup(1, batch, threads)
    s4(), s1()
    res = {4: {"wall": [], "cpu": []}, 1: {"wall": [], "cpu": []}}
    for _ in range(steps):
        for k, s in ((4, s4), (1, s1)):
            t, c = time.perf_counter(), time.process_time()
            s()
            res[k]["wall"].append(time.perf_counter() - t)
            res[k]["cpu"].append(time.process_time() - c)
    return {"batch": batch, "wall_ratio": statistics.median(res[4]["wall"]) / statistics.median(res[1]["wall"]),
            "cpu_ratio": statistics.median(res[4]["cpu"]) / statistics.median(res[1]["cpu"])}


def _run_child(args: list[str]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "bench.pcdarts_memory", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pcdarts_memory", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 process x 1 step per configuration, no warm-up step, the 4 processes run in "
                         "parallel, no interleaved timing (the time ratio is then the CPU-time ratio)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up steps before the measured ones")
    ap.add_argument("--no-interleaved", action="store_true")
    ap.add_argument("--procs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--child", nargs=5, type=int, metavar=("K", "BATCH", "STEPS", "THREADS", "WARMUP"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--interleaved", nargs=3, type=int, metavar=("BATCH", "STEPS", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child)))
        return 0
    if a.interleaved:
        print(json.dumps(child_interleaved(*a.interleaved)))
        return 0
    from bench._common import machine, today

    procs, steps, warmup = (1, 1, 0) if a.quick else (a.procs, a.steps, a.warmup)
    interleaved = not (a.quick or a.no_interleaved)
    rows = {}
    jobs = [(r, batch, k) for r in range(procs) for batch in a.batches for k in (4, 1)]
    results = []
    if a.quick:  # all configurations at once (each its own process; memory is per process)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(jobs)) as ex:
            results = list(ex.map(lambda j: _run_child(["--child", str(j[2]), str(j[1]), str(steps), str(a.threads),
                                                        str(warmup)]), jobs))
    else:  # alternate K=4 / K=1 processes so load drifts hit both
        results = [_run_child(["--child", str(k), str(batch), str(steps), str(a.threads), str(warmup)])
                   for r, batch, k in jobs]
    for (r, batch, k), res in zip(jobs, results):
        row = rows.setdefault((k, batch), {"params": res["params"], "mem": [], "wall": [], "cpu": []})
        row["mem"] += res["mem_mib"]
        row["wall"] += res["wall_s"]
        row["cpu"] += res["cpu_s"]
        print(f"  K={k} batch={batch} process {r + 1}/{procs}: "
              f"{statistics.median(res['mem_mib']):.0f} MiB, {statistics.median(res['wall_s']):.2f} s",
              file=sys.stderr, flush=True)
    inter = {b: _run_child(["--interleaved", str(b), str(steps), str(a.threads)]) for b in a.batches} \
        if interleaved else {}
    med = statistics.median
    print(f"## pcdarts_memory\n\nmachine: {machine()} ({a.threads} torch thread(s) per process)  \ndate: {today()}  "
          f"\ncommand: python -m bench.pcdarts_memory {'--quick ' if a.quick else ''}--threads {a.threads}  "
          f"\nmedians over {procs} fresh process(es) x {steps} step(s) (after {warmup} warm-up step(s)); search network "
          f"8 cells, C=16, 32x32, SGD weight step\n")
    print("| K | batch | params | memory added (MiB) | official (MiB) | step wall (s) | step CPU (s) | official (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in a.batches:
        for k in (4, 1):
            r = rows[(k, batch)]
            am, at = ANCHOR.get((k, batch), (float("nan"), float("nan")))
            print(f"| {k} | {batch} | {r['params'] / 1e6:.2f}M | {med(r['mem']):.0f} | {am} | {med(r['wall']):.2f} "
                  f"| {med(r['cpu']):.2f} | {at} |")
    how = "interleaved in one process, wall / CPU" if interleaved else "separate processes, CPU time"
    print(f"\n| batch | memory K=4 ÷ K=1 | official | time K=4 ÷ K=1 ({how}) | official | goal |")
    print("|---|---|---|---|---|---|")
    for batch in a.batches:
        m = med(rows[(4, batch)]["mem"]) / med(rows[(1, batch)]["mem"])
        am = ANCHOR[(4, batch)][0] / ANCHOR[(1, batch)][0] if (4, batch) in ANCHOR else float("nan")
        if interleaved:
            t = f"{inter[batch]['wall_ratio']:.3f} / {inter[batch]['cpu_ratio']:.3f}"
        else:
            t = f"{med(rows[(4, batch)]['cpu']) / med(rows[(1, batch)]['cpu']):.3f}"
        print(f"| {batch} | {m:.3f} | {am:.2f} | {t} | 0.38 (alternating) | ≤ 0.28 / ≤ 0.30 at 64 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
