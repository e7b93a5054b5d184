"""The one training engine: phases -> epochs -> steps, for every strategy.

Per step: zero grads -> ``strategy.step`` (forward/backward of its subnets, gradients
add up) -> all-reduce gradients across workers -> clip (``strategy.clip_gradients``) -> optimizer step -> LR
schedule (per iteration). Checkpoints capture everything needed to resume bit for bit
on CPU: weights, optimizer, phase/epoch/step, the torch RNG and strategy state.

Device and format, for every strategy: batches arrive on the experiment's ``device``
(augmented there, see :mod:`nasplat.data.augment`), ``strategy.step`` runs inside
``torch.autocast`` for ``train.precision`` (:mod:`.precision`; weights, optimizer
state and checkpoints stay fp32), and conv nets train in channels_last (the model
once, each batch as it arrives) unless ``train.channels_last`` is false.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from ..checkpoint import load_checkpoint, save_checkpoint, save_weights
from ..data import DataBundle, load_experiment_data
from ..device import check_precision, is_conv_net, resolve_device
from ..errors import UserError
from ..io import append_csv_rows, write_text
from ..ui import progress_bar, say
from .distributed import Dist
from .precision import MixedPrecision
from .strategies import STRATEGIES, Strategy, StepInfo, TrainContext

if TYPE_CHECKING:
    from ..experiment import Experiment

LOG_COLUMNS = ["phase", "epoch", "step", "global_step", "loss", "lr", "resolution", "macs", "archs", "time"]


class Trainer:
    def __init__(self, ctx: TrainContext, strategy: Strategy, data_batch_size: int = 64):
        self.ctx = ctx
        self.strategy = strategy
        self.model = strategy.model
        self.dir = Path(ctx.run_dir) / "supernet"
        self.last = self.dir / "last.safetensors"
        self.final = self.dir / "supernet.safetensors"
        self.log_path = self.dir / "train_log.csv"
        self.position = {"phase": 0, "epoch": 0, "step": 0, "global_step": 0}
        self.optimizer: torch.optim.Optimizer | None = None
        self.batch_size = ctx.cfg.batch_size or data_batch_size  # train.batch_size overrides data's
        self._resume_optimizer: dict[str, Any] | None = None
        self._pending_log: list[dict[str, Any]] = []
        self.channels_last = ctx.cfg.channels_last and is_conv_net(self.model)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.mp = MixedPrecision(self.model, ctx.device, ctx.cfg.precision)
        self.on_saved: Callable[[Trainer], None] | None = None  # called on every worker after each save()

    # -- checkpoints --------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {"space_hash": self.ctx.space.hash(), "space": self.ctx.space.config.name,
                "strategy": self.strategy.name, "seed": self.ctx.seed, **self.position}

    def save(self) -> None:
        if self.ctx.dist.is_main:
            self._flush_log()
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else {},
                "strategy": self.strategy.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "grad_scaler": self.mp.state_dict(),
            }
            save_checkpoint(self.last, state, self.meta())
        if self.on_saved is not None:
            self.on_saved(self)

    def resume(self) -> bool:
        """Load ``last.safetensors`` if present; returns whether it did."""
        if not self.last.exists():
            return False
        state, meta = load_checkpoint(self.last, self.ctx.space.hash())
        self.model.load_state_dict(state["model"])
        self.strategy.load_state_dict(state.get("strategy", {}))
        torch.set_rng_state(state["torch_rng"])
        self.mp.load_state_dict(state.get("grad_scaler") or {})
        self._resume_optimizer = state.get("optimizer") or None
        self.position = {k: int(meta[k]) for k in self.position}
        self._truncate_log()
        return True

    def _truncate_log(self) -> None:
        """Drop log rows written after the checkpoint (they will be redone)."""
        if not self.log_path.exists():
            return
        lines = self.log_path.read_text().splitlines(keepends=True)
        keep = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",")[3]) < self.position["global_step"]]
        write_text(self.log_path, "".join(keep))

    def _flush_log(self) -> None:
        if self._pending_log and self.ctx.dist.is_main:
            append_csv_rows(self.log_path, self._pending_log, LOG_COLUMNS)
        self._pending_log = []

    # -- the loop -----------------------------------------------------------------
    def fit(self) -> torch.nn.Module:
        ctx, strat = self.ctx, self.strategy
        phases = strat.phases()
        bs = self.batch_size
        n_train = len(ctx.data.train)
        world, rank = ctx.dist.world_size, ctx.dist.rank
        every = ctx.cfg.checkpoint_every
        start = dict(self.position)
        resume_opt = self._resume_optimizer
        for pi in range(start["phase"], len(phases)):
            phase = phases[pi]
            say(f"phase {pi + 1}/{len(phases)} '{phase.name}': {phase.restriction}; "
                f"{phase.subnets_per_step} subnet(s)/step, {phase.epochs} epoch(s), lr {phase.lr:g}",
                ctx.dist.is_main)
            strat.begin_phase(pi, phase)
            self.optimizer = strat.make_optimizer(phase)
            for g in self.optimizer.param_groups:
                g["base_lr"] = g["lr"]
            if resume_opt is not None and pi == start["phase"]:
                self.optimizer.load_state_dict(resume_opt)
            steps_per_epoch = max(1, n_train // (bs * world))
            total = steps_per_epoch * phase.epochs
            warm = int(round(phase.warmup_epochs * steps_per_epoch))
            first_epoch = start["epoch"] if pi == start["phase"] else 0
            with progress_bar(f"{phase.name}", total, ctx.dist.is_main) as bar:
                bar.advance(first_epoch * steps_per_epoch)
                for epoch in range(first_epoch, phase.epochs):
                    strat.begin_epoch(pi, epoch)
                    order = strat.epoch_order(pi, epoch, n_train)
                    per_worker = steps_per_epoch * bs
                    order = order[: per_worker * world][rank::world] if world > 1 else order[:per_worker]
                    first_step = start["step"] if (pi == start["phase"] and epoch == start["epoch"]) else 0
                    bar.advance(first_step)
                    # resuming mid-epoch: the batches already trained are not even drawn (nor
                    # augmented, so the restored RNG continues exactly where it stopped)
                    batches = ctx.data.batches("train", bs, order[first_step * bs:], drop_last=True, augment=True,
                                               device=ctx.device)
                    self.model.train()
                    for step, (x, y, idx) in enumerate(batches, start=first_step):
                        it = epoch * steps_per_epoch + step
                        for g in self.optimizer.param_groups:
                            g["lr"] = g["base_lr"] * strat.lr_factor(it, total, warm)
                        t0 = time.perf_counter()
                        if self.channels_last and x.dim() == 4:
                            x = x.contiguous(memory_format=torch.channels_last)
                        self.optimizer.zero_grad(set_to_none=True)
                        info = StepInfo(pi, epoch, step, self.position["global_step"])
                        self.mp.begin_step()
                        with self.mp.autocast():
                            out = strat.step(x, y, idx, info)
                        ctx.dist.average_gradients(self.model.parameters())
                        self.mp.step(self.optimizer, strat.clip_gradients)
                        ctx.dist.broadcast_buffers(self.model)  # BN stats: rank 0's, as DDP does
                        self.position.update(phase=pi, epoch=epoch, step=step + 1,
                                             global_step=self.position["global_step"] + 1)
                        self._log(phase.name, epoch, step, out, self.optimizer.param_groups[0]["lr"],
                                  time.perf_counter() - t0)
                        bar.advance(1, f"loss {out.loss:.3f}")
                        if every and self.position["global_step"] % every == 0:
                            self.save()
                    extra = strat.end_epoch(pi, epoch)
                    self.position.update(epoch=epoch + 1, step=0)
                    if extra:
                        say(f"  epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in extra.items()),
                            ctx.dist.is_main)
                    self.save()
            self.position.update(phase=pi + 1, epoch=0, step=0)
            resume_opt = None
            self.save()
            if ctx.dist.is_main:
                save_weights(self.dir / f"phase_{pi}_{phase.name.replace('/', '-')}.safetensors", self.model,
                             self.meta())
        strat.finish()
        if ctx.dist.is_main:
            self._flush_log()
            save_weights(self.final, self.model, self.meta())
        return self.model

    def _log(self, phase: str, epoch: int, step: int, out: Any, lr: float, dt: float) -> None:
        if not self.ctx.dist.is_main:
            return
        space = self.ctx.space
        self._pending_log.append({
            "phase": phase, "epoch": epoch, "step": step, "global_step": self.position["global_step"] - 1,
            "loss": f"{out.loss:.6f}", "lr": f"{lr:.6g}", "resolution": out.resolution or "",
            "macs": ";".join(str(space.macs(a)) for a in out.archs),
            "archs": ";".join(a.id for a in out.archs), "time": f"{dt:.4f}",
        })
        if len(self._pending_log) >= 50:
            self._flush_log()


def make_trainer(ctx: TrainContext, data_batch_size: int) -> Trainer:
    cls = STRATEGIES.get(ctx.cfg.strategy, None, "train.strategy")
    if ctx.cfg.precision == "fp16" and cls.steps_own_optimizer:
        raise UserError(f"fp16 is not supported with the {cls.name} strategy (it runs an optimizer step of its own "
                        "inside each training step, which would see loss-scaled gradients); use bf16 or fp32",
                        None, "train.precision")
    options = cls.parse_options(ctx.cfg.options)
    return Trainer(ctx, cls(ctx, options), data_batch_size)


def build_trainer(exp: Experiment, data: DataBundle | None = None, device: torch.device | None = None) -> Trainer:
    """The trainer for an experiment: seeds, device, data, supernet and strategy (also
    what each Ray Train worker runs, where ``Dist`` picks up the worker's process group
    and ``device`` is the worker's GPU or the CPU)."""
    cfg = exp.config
    device = device if device is not None else resolve_device(cfg.device, exp.path)
    check_precision(cfg.train.precision, device, exp.path)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = data if data is not None else load_experiment_data(exp)
    ctx = TrainContext(exp.space, data, cfg.train, cfg.seed, exp.run_dir, device, Dist(), exp.base_dir)
    try:
        trainer = make_trainer(ctx, cfg.data.batch_size)
    except UserError as e:
        raise UserError(e.message, e.file or exp.path, e.field) from None
    if cfg.train.init:  # trained weights to start from (a resumed run then loads its own)
        from ..supernet.ofa_convert import load_weights_into

        load_weights_into(trainer.model, exp.space, exp.resolve(cfg.train.init), "train.init")
    return trainer
