"""Data-parallel training under Ray Train (``train.workers > 1``).

A ``TorchTrainer`` starts ``train.workers`` workers (gloo on CPU, nccl on GPU); each
builds the same :class:`~nasplat.train.engine.Trainer` through
:func:`nasplat.train.run.build_trainer` (``Dist`` picks up the process group that
``TorchTrainer`` initialised), takes its shard of every epoch's order, all-reduces the
gradients and draws the same subnets and resolution as every other worker (all
draws are seeded from (seed, phase, epoch, step, j)). Rank 0 alone writes
checkpoints, the log and the final weights. At the end every worker hashes its
weights; the hashes are gathered and written to ``supernet/replicas.json``, and a
mismatch fails the run (the replicas must be identical).

Ray: a local instance by default (dashboard off), ``address`` (``auto``,
``ray://host:10001``) for a cluster. On a cluster the run folder must be on storage
every node sees (NFS), since workers read the experiment's data and rank 0 writes
the checkpoints there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import weights_digest
from ..errors import UserError
from ..experiment import Experiment, ExperimentConfig
from ..paths import REPO_ROOT
from ..ui import say

REPLICAS_FILE = "replicas.json"


def _payload(exp: Experiment, resume: bool) -> dict[str, Any]:
    """What a worker needs to rebuild the experiment anywhere: the resolved config
    (space inlined, absolute output folder) and the experiment file's path (for
    relative data paths)."""
    cfg = exp.config.model_dump(mode="json")
    cfg["space"] = exp.space.config.model_dump(mode="json")
    cfg["output_dir"] = str(exp.run_dir.resolve().parent)
    return {"config": cfg, "path": str(exp.path.resolve()), "resume": bool(resume)}


def _experiment(payload: dict[str, Any]) -> Experiment:
    from ..space import space_from_dict, validate

    path = Path(payload["path"])
    config = validate(ExperimentConfig, payload["config"], path)
    return Experiment(config, path, space_from_dict(config.space, path, "space"))


def _worker(payload: dict[str, Any]) -> None:
    """The per-worker training function (runs inside a Ray Train worker)."""
    import json

    import torch.distributed as torch_dist

    from ..io import write_text
    from .engine import build_trainer

    exp = _experiment(payload)
    device = torch.device("cpu")
    if exp.config.train.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    trainer = build_trainer(exp, device=device)
    dist = trainer.ctx.dist
    if not dist.enabled or dist.world_size != exp.config.train.workers:
        raise RuntimeError(f"expected a torch.distributed group of {exp.config.train.workers} workers, "
                           f"found {dist.world_size if dist.enabled else 'none'}")
    if payload["resume"] and trainer.resume():
        say(f"resuming at phase {trainer.position['phase']}, epoch {trainer.position['epoch']}, "
            f"step {trainer.position['step']}", dist.is_main)
    trainer.fit()
    digests: list[Any] = [None] * dist.world_size
    torch_dist.all_gather_object(digests, weights_digest(trainer.model))
    if dist.is_main:
        write_text(trainer.dir / REPLICAS_FILE, json.dumps({"world_size": dist.world_size, "digests": digests},
                                                          indent=1) + "\n")
    if len(set(digests)) != 1:
        raise RuntimeError(f"workers ended with different weights: {digests}")


def train_distributed(exp: Experiment, resume: bool = False, address: str | None = None) -> Path:
    """Train ``exp`` data-parallel on ``train.workers`` Ray Train workers; returns the
    final weights' path."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = exp.config.train
    started = False
    if not ray.is_initialized():
        env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=True)
        else:
            ray.init(include_dashboard=False, runtime_env=env, log_to_driver=True)
        started = True
    run_dir = exp.run_dir.resolve()
    say(f"Ray Train: {cfg.workers} workers ({'GPU, nccl' if cfg.use_gpu else 'CPU, gloo'})")
    trainer = TorchTrainer(
        _worker,
        train_loop_config=_payload(exp, resume),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name="train", storage_path=str(run_dir / "ray"),
                             failure_config=FailureConfig(max_failures=0)),
    )
    try:
        trainer.fit()
    except Exception as e:  # a worker's UserError stays a one-line user error
        failures = getattr(e, "worker_failures", None) or {}
        for err in failures.values():
            if isinstance(err, UserError):
                raise UserError(err.message, err.file, err.field) from None
        raise
    finally:
        if started:
            ray.shutdown()
    return run_dir / "supernet" / "supernet.safetensors"
