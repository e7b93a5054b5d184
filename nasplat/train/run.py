"""``nasplat train``: build data, supernet and strategy from an experiment and fit,
in-process (1 worker) or data-parallel under Ray Train (``train.workers > 1``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import DataBundle, load_data
from ..errors import UserError
from ..experiment import Experiment
from ..ui import say
from .distributed import Dist
from .engine import Trainer, make_trainer
from .strategies import TrainContext


def load_experiment_data(exp: Experiment) -> DataBundle:
    cfg = exp.config
    try:
        data = load_data(cfg.data, exp.space.config.input_channels, exp.base_dir)
    except UserError as e:
        if e.file is not None:
            raise
        raise UserError(e.message, exp.path, e.field) from None  # name the experiment file
    if data.num_classes != exp.space.config.num_classes:
        raise UserError(f"the space has {exp.space.config.num_classes} classes but data set "
                        f"{cfg.data.name!r} has {data.num_classes}", exp.space.source or exp.path, "num_classes")
    return data


def build_trainer(exp: Experiment, data: DataBundle | None = None, device: torch.device | None = None) -> Trainer:
    cfg = exp.config
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = data if data is not None else load_experiment_data(exp)
    ctx = TrainContext(exp.space, data, cfg.train, cfg.seed, exp.run_dir, device or torch.device("cpu"), Dist())
    return make_trainer(ctx, cfg.data.batch_size)


def train_experiment(exp: Experiment, resume: bool = False, force: bool = False,
                     address: str | None = None) -> Path:
    """Train the experiment's supernet; returns the final weights' path."""
    final = exp.run_dir / "supernet" / "supernet.safetensors"
    last = exp.run_dir / "supernet" / "last.safetensors"
    if final.exists() and not force:
        say(f"supernet already trained: {final} (use --force to retrain)")
        return final
    if last.exists() and not (resume or force):
        raise UserError("a partial training run exists; pass --resume to continue it or --force to restart",
                        last, None)
    if force:
        for p in (final, last, last.with_suffix(".json"), exp.run_dir / "supernet" / "train_log.csv"):
            p.unlink(missing_ok=True)
    if exp.config.train.workers > 1:
        from .ray_train import train_distributed

        return train_distributed(exp, resume=resume, address=address)
    trainer = build_trainer(exp)
    if resume and trainer.resume():
        say(f"resuming from {last} at phase {trainer.position['phase']}, epoch {trainer.position['epoch']}, "
            f"step {trainer.position['step']}")
    trainer.fit()
    return final
