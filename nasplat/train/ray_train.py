"""Data-parallel training under Ray Train (``train.workers > 1``).

A ``TorchTrainer`` starts ``train.workers`` workers (gloo on CPU; nccl and a GPU each
when the experiment's ``device`` is CUDA, or ``auto`` on a cluster with GPUs); each
builds the same :class:`~nasplat.train.engine.Trainer` through
:func:`~nasplat.train.engine.build_trainer` (``Dist`` picks up the process group that
``TorchTrainer`` initialised), takes its shard of every epoch's order, all-reduces the
gradients and draws the same subnets and resolution as every other worker (all draws
are seeded from (seed, phase, epoch, step, j)). At the end every worker hashes its
weights; the hashes are gathered and written to ``supernet/replicas.json`` (with the
Ray node of each rank), and a mismatch fails the run (the replicas must be identical).

Where files go (the one place this is stated):

* Workers never write into the driver's run folder, so nodes need not share it:
  rank 0 writes its checkpoints, log and weights into a run folder local to its own
  node, and after each checkpoint (``train.checkpoint_every`` steps, each epoch end)
  reports that ``supernet/`` folder to Ray Train (``ray.train.report``); files other
  ranks write there (per-rank traces) join the same checkpoint.
* Ray Train persists the reported checkpoints under ``train.storage_path`` (default:
  ``<run folder>/ray`` on the driver, enough on one machine; on a multi-node cluster
  it must be storage every node sees: an NFS path or a pyarrow URI such as
  ``s3://bucket/prefix``), in a run named after the experiment.
* At the end the driver copies the last checkpoint (final weights, log, phase
  weights, ``replicas.json``) into its own run folder, ``<run folder>/supernet/``.
* The data path is resolved on the driver; every node checks that it can read it
  before training (:func:`nasplat.ray_runtime.check_paths_on_nodes`).

Failures: when a worker dies, Ray Train restarts the worker group (up to
``train.max_failures`` times) and every worker restores the last reported checkpoint
(``ray.train.get_checkpoint``), so a killed worker costs at most one checkpoint
interval past the last checkpoint Ray Train registered. ``nasplat train --resume`` after
the driver itself died continues the same Ray Train run from its storage; ``--force``
deletes it.

Ray floor (setup.cfg): 2.51, the first release with Ray Train V2 on by default
(ray-project/ray#57857), whose ``ray.train.report(metrics, checkpoint=...)``,
``ray.train.get_checkpoint()`` and ``RunConfig(storage_path=..., failure_config=...,
checkpoint_config=...)`` this module uses; tested with Ray 2.60.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import read_meta, weights_digest
from ..errors import UserError
from ..experiment import Experiment, ExperimentConfig
from ..ui import say

REPLICAS_FILE = "replicas.json"
# Ray Train V2 defaults changed for a clean console (a user's own setting wins):
RAY_TRAIN_ENV = {
    # prints inside workers otherwise reach the console twice (stdout and Ray Train's logger)
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # cloud-preemption watcher: created with an object-store constructor argument, which logs the
    # core_worker "constructor arguments in the object store" error of ray#53727 on every run
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def _payload(exp: Experiment, use_gpu: bool) -> dict[str, Any]:
    """What a worker needs to rebuild the experiment anywhere: the resolved config
    (space inlined, data path absolute as resolved on the driver)."""
    cfg = exp.config.model_dump(mode="json")
    cfg["space"] = exp.space.config.model_dump(mode="json")
    paths = node_paths(exp)
    if "data.path" in paths:
        cfg["data"]["path"] = paths["data.path"]
    if "train.init" in paths:
        cfg["train"]["init"] = paths["train.init"]
    return {"config": cfg, "path": str(exp.path.resolve()), "gpu": use_gpu}


def node_paths(exp: Experiment) -> dict[str, str]:
    """The files the workers read, resolved on the driver, by field (each node must read them)."""
    c = exp.config
    fields = {"data.path": c.data.path, "train.init": c.train.init}
    return {f: str(exp.resolve(p).resolve()) for f, p in fields.items() if p}


def _experiment(payload: dict[str, Any], output_dir: Path) -> Experiment:
    from ..space import space_from_dict, validate

    path = Path(payload["path"])
    config = validate(ExperimentConfig, {**payload["config"], "output_dir": str(output_dir)}, path)
    return Experiment(config, path, space_from_dict(config.space, path, "space"))


def _files(folder: Path) -> dict[str, int]:
    """Relative path -> modification time (ns) of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


class _Reporter:
    """After each checkpoint, on every worker (``ray.train.report`` is a barrier): rank 0
    hands its whole ``supernet/`` folder to Ray Train; another rank hands the files it
    wrote itself (e.g. PA&DA's per-rank traces), which Ray merges into the same
    checkpoint, or nothing."""

    def __init__(self, folder: Path):
        self.seen = _files(folder) if folder.is_dir() else {}  # as restored from a checkpoint

    def __call__(self, trainer: Any) -> None:
        import ray.train

        metrics = {k: int(v) for k, v in trainer.position.items()}
        if trainer.ctx.dist.is_main:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(trainer.dir)))
            return
        now = _files(trainer.dir) if trainer.dir.is_dir() else {}
        mine = [f for f, t in now.items() if self.seen.get(f) != t]
        if not mine:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="nasplat-rank-") as tmp:
            for f in mine:
                (Path(tmp) / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(trainer.dir / f, Path(tmp) / f)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _worker(payload: dict[str, Any]) -> None:
    """The per-worker training function (runs inside a Ray Train worker)."""
    import ray
    import ray.train
    import torch.distributed as torch_dist

    from ..io import write_text
    from .engine import build_trainer

    local = Path(tempfile.mkdtemp(prefix="nasplat-train-"))
    try:
        exp = _experiment(payload, local)
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:  # a restart after a failure, or --resume of this run
            checkpoint.to_directory(str(exp.run_dir / "supernet"))
        device = torch.device("cpu")
        if payload["gpu"]:
            import ray.train.torch

            device = ray.train.torch.get_device()
        trainer = build_trainer(exp, device=device)
        dist = trainer.ctx.dist
        if not dist.enabled or dist.world_size != exp.config.train.workers:
            raise RuntimeError(f"expected a torch.distributed group of {exp.config.train.workers} workers, "
                               f"found {dist.world_size if dist.enabled else 'none'}")
        if checkpoint is not None and trainer.resume():
            say(f"resuming from the last checkpoint at phase {trainer.position['phase']}, epoch "
                f"{trainer.position['epoch']}, step {trainer.position['step']} (global step "
                f"{trainer.position['global_step']})", dist.is_main)
        report = _Reporter(trainer.dir)
        trainer.on_saved = report
        trainer.fit()
        mine = (weights_digest(trainer.model), ray.get_runtime_context().get_node_id())
        gathered: list[Any] = [None] * dist.world_size
        torch_dist.all_gather_object(gathered, mine)
        digests = [d for d, _ in gathered]
        if dist.is_main:
            write_text(trainer.dir / REPLICAS_FILE, json.dumps({"world_size": dist.world_size, "digests": digests,
                                                               "nodes": [n for _, n in gathered]}, indent=1) + "\n")
        if len(set(digests)) != 1:
            raise RuntimeError(f"workers ended with different weights: {digests}")
        report(trainer)  # the final weights and replicas.json reach the driver in this checkpoint
    finally:
        shutil.rmtree(local, ignore_errors=True)


def storage_path(exp: Experiment) -> str:
    """Where Ray Train keeps this experiment's checkpoints (see the module docstring)."""
    p = exp.config.train.storage_path
    if p is None:
        return str((exp.run_dir / "ray").resolve())
    return p if "://" in p else str(exp.resolve(p).resolve())


def _storage_run(exp: Experiment) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of this experiment's Ray Train run folder."""
    import pyarrow.fs

    fs, base = pyarrow.fs.FileSystem.from_uri(storage_path(exp))
    return fs, f"{base.rstrip('/')}/{exp.config.name}"


def has_partial_run(exp: Experiment) -> bool:
    """True when Ray Train storage holds a run of this experiment."""
    import pyarrow.fs

    fs, path = _storage_run(exp)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def delete_run(exp: Experiment) -> None:
    fs, path = _storage_run(exp)
    if has_partial_run(exp):
        fs.delete_dir(path)


def _use_gpu(exp: Experiment) -> bool:
    import ray

    has_gpu = ray.cluster_resources().get("GPU", 0) >= exp.config.train.workers
    device = exp.config.device
    if device != "cpu" and device != "auto" and not has_gpu:
        raise UserError(f"device {device!r} asked for, but the Ray cluster has fewer than "
                        f"{exp.config.train.workers} GPUs for train.workers", exp.path, "device")
    return device != "cpu" and has_gpu


def train_distributed(exp: Experiment, resume: bool = False, address: str | None = None) -> Path:
    """Train ``exp`` data-parallel on ``train.workers`` Ray Train workers; returns the
    final weights' path in the driver's run folder."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..ray_runtime import check_paths_on_nodes, ray_session

    cfg = exp.config.train
    final = exp.run_dir / "supernet" / "supernet.safetensors"
    for var, value in RAY_TRAIN_ENV.items():  # Ray Train hands these on to its controller and workers
        os.environ.setdefault(var, value)
    if has_partial_run(exp) and not resume:
        raise UserError("a partial training run exists; pass --resume to continue it or --force to restart",
                        storage_path(exp), None)
    with ray_session(address, log_to_driver=True):
        check_paths_on_nodes(node_paths(exp), exp.path)
        use_gpu = _use_gpu(exp)
        say(f"Ray Train: {cfg.workers} workers ({'GPU, nccl' if use_gpu else 'CPU, gloo'}), checkpoints in "
            f"{storage_path(exp)}, up to {cfg.max_failures} restart(s) after a worker failure")
        trainer = TorchTrainer(
            _worker,
            train_loop_config=_payload(exp, use_gpu),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, placement_strategy="SPREAD"),
            run_config=RunConfig(name=exp.config.name, storage_path=storage_path(exp),
                                 failure_config=FailureConfig(max_failures=cfg.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2), **_quiet_logging()),
        )
        try:
            result = trainer.fit()
        except Exception as e:  # a worker's UserError stays a one-line user error
            _reraise_user_error(e)
            raise
        if result.checkpoint is None:
            raise RuntimeError("Ray Train finished without a checkpoint")
        out = exp.run_dir / "supernet"
        out.mkdir(parents=True, exist_ok=True)
        result.checkpoint.to_directory(str(out))
    meta = read_meta(final)
    say(f"final weights: {final} (global step {meta.get('global_step')})")
    return final


def _quiet_logging() -> dict[str, Any]:
    """Ray Train's own console lines at WARNING and above (its INFO lines report every
    checkpoint twice per worker); ``LoggingConfig`` is there from Ray 2.5x on."""
    import ray.train

    cls = getattr(ray.train, "LoggingConfig", None)
    return {"logging_config": cls(log_level="WARNING")} if cls is not None else {}


def _reraise_user_error(e: BaseException) -> None:
    seen: set[int] = set()
    stack = [e]
    while stack:
        err = stack.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, UserError):
            raise UserError(err.message, err.file, err.field) from None
        stack += [x for x in (getattr(err, "cause", None), err.__cause__, err.__context__) if x is not None]
        stack += [x for x in (getattr(err, "worker_failures", None) or {}).values() if isinstance(x, BaseException)]
