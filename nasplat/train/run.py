"""``nasplat train``: build data, supernet and strategy from an experiment and fit,
in-process (1 worker) or data-parallel under Ray Train (``train.workers > 1``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..ui import say
from .engine import build_trainer

if TYPE_CHECKING:
    from ..experiment import Experiment


def train_experiment(exp: Experiment, resume: bool = False, force: bool = False,
                     address: str | None = None) -> Path:
    """Train the experiment's supernet; returns the final weights' path. One writer per
    run (:mod:`nasplat.lock`); a finished or partial run made from other settings is
    refused, naming them (:mod:`nasplat.provenance`)."""
    from .. import provenance
    from ..lock import stage_lock

    with stage_lock(exp.run_dir, "supernet") as folder:
        final, last = folder / "supernet.safetensors", folder / "last.safetensors"

        def discard() -> None:
            for p in [final, last, *folder.glob("phase_*"), folder / "train_log.csv"]:
                p.unlink(missing_ok=True)
                p.with_suffix(".json").unlink(missing_ok=True)

        with provenance.fresh_outputs(folder, "train", provenance.train_inputs(exp),
                                      lambda: final.exists() or last.exists(), force=force,
                                      resume=resume and not final.exists(), file=exp.path, discard=discard):
            return _train(exp, resume, force, address)


def _train(exp: Experiment, resume: bool, force: bool, address: str | None) -> Path:
    final = exp.run_dir / "supernet" / "supernet.safetensors"
    last = exp.run_dir / "supernet" / "last.safetensors"
    if final.exists() and not force:
        say(f"supernet already trained: {final} (use --force to retrain)")
        return final
    if last.exists() and not (resume or force):
        raise UserError("a partial training run exists; pass --resume to continue it or --force to restart",
                        last, None)
    if exp.config.train.workers > 1:
        from .ray_train import delete_run, train_distributed

        if force:
            delete_run(exp)
        exp.write_config()
        return train_distributed(exp, resume=resume, address=address)
    trainer = build_trainer(exp)
    if resume and trainer.resume():
        say(f"resuming from {last} at phase {trainer.position['phase']}, epoch {trainer.position['epoch']}, "
            f"step {trainer.position['step']}")
    exp.write_config()
    trainer.fit()
    return final
