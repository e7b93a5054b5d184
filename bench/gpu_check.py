"""gpu_check: nasplat on a CUDA machine, in one command (never a CI test).

1. Training steps of progressive shrinking's kernel phase on the full OFA MobileNetV3
   space (``search_spaces/ofa_mbv3.yaml``) at 224x224, batch 128, through the engine's
   own pieces (the PS strategy's ``step``, ``train.precision`` autocast and gradient
   scaler, channels_last), on synthetic images (no ImageNet here): the median step time
   in bf16 and in fp32 (ratio bf16 / fp32).
2. Supernet / static step time for the max, mid (median MACs of 200 random archs) and
   min subnets: a training step (forward, backward, SGD step) of the supernet set to
   that arch against the same step of the extracted static subnet, bf16 +
   channels_last.
3. 20 random subnets of a supernet trained on the GPU (``examples/digits_ofa_ps.yaml``
   with ``device: cuda``, in its own run folder) evaluated on GPU evaluators, 4 per GPU
   (``search.gpus_per_worker: 0.25``), once in fp32 and once in bf16: accuracy of each
   extracted subnet after BN recalibration, and the largest bf16 - fp32 difference
   (goal: within 0.5 pt).

    python -m bench.gpu_check [--steps 20] [--batch 128] [--resolution 224] [--subnets 20]
    python -m bench.gpu_check --cpu-dry-run     # the same code path, tiny, on the CPU

Without CUDA the command stops at once with one line (exit 2) unless ``--cpu-dry-run``
(resolution 32, batch 8, 3 steps, 4 subnets, a supernet trained 1 epoch per phase at
batch 256, CPU evaluators): that mode checks the path, its figures mean nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, steps: int, device, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ps_trainer(device, precision: str, batch: int, res: int, run_dir: Path):
    """A PS trainer on ofa_mbv3 (kernel phase only) over synthetic data, built by the engine."""
    import torch

    from nasplat.data import DataBundle, TensorData
    from nasplat.space import load_space
    from nasplat.train.config import TrainConfig
    from nasplat.train.distributed import Dist
    from nasplat.train.engine import make_trainer
    from nasplat.train.strategies import TrainContext

    space = load_space(REPO / "search_spaces" / "ofa_mbv3.yaml")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, res, res, generator=g)
    y = torch.randint(0, space.config.num_classes, (batch,), generator=g)
    data = DataBundle(TensorData(x, y), TensorData(x, y), TensorData(x, y), space.config.num_classes, 3, res)
    phases = {"teacher": {"epochs": 0}, "kernel": {"epochs": 1}, "depth/1": {"epochs": 0}, "depth/2": {"epochs": 0},
              "expand/1": {"epochs": 0}, "expand/2": {"epochs": 0}}
    cfg = TrainConfig(strategy="progressive_shrinking", epochs=1, lr=0.03, batch_size=batch, precision=precision,
                      options={"phases": phases, "kd_ratio": 0.0})
    ctx = TrainContext(space, data, cfg, 0, run_dir, device, Dist(), REPO)
    return make_trainer(ctx, batch), x.to(device), y.to(device)


def train_step_times(device, batch: int, res: int, steps: int) -> dict[str, float]:
    """Median kernel-phase step time of the PS supernet in bf16 and fp32."""
    import torch

    from nasplat.train.strategies import StepInfo

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("bf16", "fp32"):
            tr, x, y = _ps_trainer(device, precision, batch, res, Path(tmp))
            strat = tr.strategy
            phases = strat.phases()
            pi = next(i for i, p in enumerate(phases) if p.name == "kernel")
            strat.begin_phase(pi, phases[pi])
            opt = strat.make_optimizer(phases[pi])
            if tr.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            step = [0]

            def one() -> None:
                opt.zero_grad(set_to_none=True)
                tr.mp.begin_step()
                with tr.mp.autocast():
                    strat.step(x, y, torch.arange(len(y)), StepInfo(pi, 0, step[0], step[0]))
                tr.mp.step(opt, strat.clip_gradients)
                step[0] += 1

            out[precision] = _median_time(one, steps, device)
            del tr, strat, opt
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def supernet_vs_static(device, batch: int, res: int, steps: int) -> list[tuple[str, float, float]]:
    """(name, supernet step s, static step s) for the max / mid / min subnets, bf16 + NHWC."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from nasplat.device import autocast
    from nasplat.space import load_space
    from nasplat.supernet import build_supernet

    space = load_space(REPO / "search_spaces" / "ofa_mbv3.yaml")
    rng = np.random.default_rng(0)
    pool = sorted((space.sample(rng) for _ in range(200)), key=space.macs)
    archs = {"max": space.max_arch(), "mid": pool[len(pool) // 2], "min": space.min_arch()}
    net = build_supernet(space).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, space.config.num_classes, (batch,), device=device)
    rows = []
    for name, arch in archs.items():
        xr = F.interpolate(x, size=space.resolution(arch), mode="bilinear", align_corners=False)
        xr = xr.contiguous(memory_format=torch.channels_last)
        times = []
        for model in ("supernet", "static"):
            if model == "supernet":
                net.set_active(arch)
                m = net
            else:
                m = net.extract(arch).to(device, memory_format=torch.channels_last)
            m.train()
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

            def one() -> None:
                opt.zero_grad(set_to_none=True)
                with autocast(device, "bf16"):
                    loss = F.cross_entropy(m(xr), y)
                loss.backward()
                opt.step()

            times.append(_median_time(one, steps, device))
        rows.append((name, times[0], times[1]))
    return rows


def gpu_evaluators(n_subnets: int, dry_run: bool) -> list[tuple[str, float, float]]:
    """(arch id, fp32 accuracy, bf16 accuracy) of ``n_subnets`` random subnets of the
    GPU-trained digits PS supernet, on evaluators 4 per GPU."""
    import numpy as np

    from nasplat.experiment import Experiment, load_experiment
    from nasplat.paths import supernet_checkpoint
    from nasplat.ray_runtime import ray_session
    from nasplat.search.evaluator import EvaluatorPool
    from nasplat.search.stage import evaluator_init, load_supernet_weights
    from nasplat.train.run import train_experiment

    base = load_experiment(REPO / "examples" / "digits_ofa_ps.yaml")
    cfg = base.config
    update = {"name": cfg.name + ("_cpu_dry_run" if dry_run else "_gpu_check"), "device": "cpu" if dry_run else "cuda",
              "output_dir": str(REPO / "runs")}
    if dry_run:
        update["train"] = cfg.train.model_copy(update={"epochs": 6, "batch_size": 256})
    exp = Experiment(cfg.model_copy(update=update), base.path, base.space)
    if not supernet_checkpoint(exp.run_dir).exists():
        print(f"training {exp.config.name} on {exp.config.device} -> {exp.run_dir}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        train_experiment(exp)
        print(f"trained in {time.perf_counter() - t0:.0f} s", flush=True)
    weights = load_supernet_weights(exp)
    rng = np.random.default_rng(12345)
    archs = list({a.id: a for a in (exp.space.sample(rng) for _ in range(10 * n_subnets))}.values())[:n_subnets]
    acc: dict[str, dict[str, float]] = {}
    with ray_session():
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0))
        workers, share = (2, 0.0) if dry_run else (4 * gpus, 0.25)
        print(f"evaluators: {workers} ({share or 'no'} GPU each, {gpus} GPU(s) in the Ray instance)", flush=True)
        for precision in ("fp32", "bf16"):
            init = {**evaluator_init(exp, exp.config.search, weights), "precision": precision}
            pool = EvaluatorPool(workers, init, cpus=1.0 if dry_run else 0.5, gpus=share)
            try:
                t0 = time.perf_counter()
                res = pool.map(archs)
                where = {str(w["device"]) for w in pool.locations()}
                print(f"  {precision}: {len(res)} subnets in {time.perf_counter() - t0:.1f} s on {sorted(where)}",
                      flush=True)
            finally:
                pool.shutdown()
            acc[precision] = {r["arch_id"]: r["accuracy"] for r in res}
    return [(a.id, acc["fp32"][a.id], acc["bf16"][a.id]) for a in archs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--subnets", type=int, default=20)
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU: checks the path only")
    args = ap.parse_args(argv)
    import torch

    if args.cpu_dry_run:
        args.steps, args.batch, args.resolution, args.subnets = 3, 8, 32, 4
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print(f"gpu_check: error: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'});"
              " run it on a GPU machine, or --cpu-dry-run to check the path", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU dry run)"
    print(f"# gpu_check  {today()}  {machine()}")
    print(f"GPU: {gpu}; torch CUDA {torch.version.cuda}; ofa_mbv3 at {args.resolution}x{args.resolution}, "
          f"batch {args.batch}, median of {args.steps} steps after 3 warm-up steps")
    if args.cpu_dry_run:
        print("CPU DRY RUN: tiny sizes, the figures mean nothing")
    t = train_step_times(device, args.batch, args.resolution, args.steps)
    print("\n| PS kernel-phase step | bf16 | fp32 | bf16 / fp32 |\n|---|---|---|---|")
    print(f"| median s | {t['bf16']:.4f} | {t['fp32']:.4f} | {t['bf16'] / t['fp32']:.2f} |")
    rows = supernet_vs_static(device, args.batch, args.resolution, args.steps)
    print("\n| subnet (bf16 + channels_last) | supernet step s | static step s | supernet / static |\n|---|---|---|---|")
    for name, sup, sta in rows:
        print(f"| {name} | {sup:.4f} | {sta:.4f} | {sup / sta:.2f} |")
    evals = gpu_evaluators(args.subnets, args.cpu_dry_run)
    diffs = [abs(b - a) * 100 for _, a, b in evals]
    print("\n| arch | fp32 acc % | bf16 acc % | diff pt |\n|---|---|---|---|")
    for aid, a, b in evals:
        print(f"| {aid} | {a * 100:.2f} | {b * 100:.2f} | {(b - a) * 100:+.2f} |")
    worst = max(diffs)
    print(f"\nlargest |bf16 - fp32| accuracy difference over {len(evals)} subnets: {worst:.2f} pt "
          f"(goal <= 0.5 pt: {'met' if worst <= 0.5 else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
