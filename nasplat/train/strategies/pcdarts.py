"""``pcdarts``: PC-DARTS (Xu et al., ICLR 2020) — partial-channel differentiable search
with edge normalisation, first-order bilevel optimisation.

* The training set is split once (seeded) into a weight half and an architecture half
  (``split``, default 50/50). :meth:`epoch_order` returns only weight-half indices; the
  strategy keeps its own seeded iterator over the architecture half (its position is
  checkpointed).
* Per step, after the architecture warm-up (``arch_warmup_epochs``, α/β frozen), the
  architecture step comes first: cross-entropy of the search network on an
  architecture batch, gradients w.r.t. α and β only (first order: no unrolled weight
  step), averaged over workers, Adam (lr 6e-4, betas (0.5, 0.999), wd 1e-3); then
  α/β are broadcast from rank 0 so every worker holds bit-identical values. Then the
  weight step's forward/backward on the weight batch (gradients w.r.t. the weights
  only); the engine all-reduces them and steps the weight optimizer, SGD lr 0.1,
  momentum 0.9, wd 3e-4, gradient-norm clip 5, cosine to ``lr_min`` per epoch.
* The genotype (``nasplat.supernet.darts_cell.derive_genotype``) is printed after every
  epoch, written to ``runs/<name>/supernet/genotype.json`` (and the per-epoch history to
  ``genotype_history.json``).

Data: the official search augments both halves with random crop (4-pixel padding) and
horizontal flip, no cutout: ``data.augment: darts`` (a note is printed when it is off).

Hyper-parameters: the weight and architecture optimisers are configured here, in
``train.options`` (defaults: docs/methods/pcdarts.md / the paper); ``train.lr``, ``momentum``,
``nesterov``, ``weight_decay``, ``label_smoothing`` and ``warmup_epochs`` are not used
by this strategy. ``train.epochs`` and the batch size keep their usual meaning (the
paper: 50 epochs, batch 256, K=4 on CIFAR-10).

Deviations from the paper's code: the cosine schedule is evaluated at epoch e/E (the
official code's old-PyTorch ``scheduler.step()`` before each epoch shifts it by one);
the search network's memory layout differs (see ``nasplat.supernet.darts_cell``) but
computes the same function.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ...errors import UserError
from ...io import write_json
from ...space._darts import DartsSpace
from ...supernet.darts_cell import PCDartsNetwork
from ...ui import say
from ._base import STRATEGIES, Phase, StepInfo, StepOutput, Strategy, derived_rng, epoch_cosine


class PCDartsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    K: int = Field(4, ge=1, le=64)  # partial-channel factor (1 = plain first-order DARTS mixed ops)
    edge_normalization: bool = True  # β; off + K=1 = DARTS
    split: float = Field(0.5, gt=0.0, lt=1.0)  # share of the training set for the weights
    # weights
    lr: float = Field(0.1, gt=0)
    lr_min: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0)
    grad_clip: float | None = Field(5.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # architecture
    arch_lr: float = Field(6e-4, gt=0)
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = Field(1e-3, ge=0)
    arch_warmup_epochs: int = Field(15, ge=0)  # α, β frozen for these first epochs
    eval_every: int = Field(1, ge=0)  # search-network accuracy on the val split every N epochs (0: never)


class ClippedSGD(torch.optim.SGD):
    """SGD that clips the global gradient norm of its parameters before each step (after
    the engine's all-reduce, so every worker clips the same averaged gradient)."""

    def __init__(self, params: Any, clip: float | None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.clip = clip

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if self.clip:
            torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], self.clip)
        return super().step(closure)


@STRATEGIES.register("pcdarts")
class PCDarts(Strategy):
    Options = PCDartsOptions
    steps_own_optimizer = True  # the architecture step (no fp16 loss scaling)
    options: PCDartsOptions
    model: PCDartsNetwork

    def __init__(self, ctx: Any, options: PCDartsOptions):
        super().__init__(ctx, options)
        n = len(ctx.data.train)
        perm = derived_rng(ctx.seed, 7101).permutation(n)
        n_w = min(n - 1, max(1, int(round(n * options.split))))
        self.weight_idx = np.sort(perm[:n_w])
        self.arch_idx = np.sort(perm[n_w:])
        self.arch_opt = torch.optim.Adam(self.model.arch_parameters(), lr=options.arch_lr,
                                         betas=options.arch_betas, weight_decay=options.arch_weight_decay)
        self.arch_epoch = 0
        self.arch_pos = 0
        self._arch_losses: list[float] = []
        self._history: dict[str, Any] = {}
        self._epochs = ctx.cfg.epochs
        if not ctx.data.augment.enabled:
            say("pcdarts: the official search augments the data (random crop + flip); data.augment is off",
                ctx.dist.is_main)

    # -- model and optimisers ------------------------------------------------------
    def build_model(self) -> nn.Module:
        space = self.ctx.space
        if not isinstance(space, DartsSpace):
            raise UserError(f"strategy 'pcdarts' needs a darts_cell space, not {space.family!r}",
                            space.source, "family")
        return PCDartsNetwork(space, self.options.K, self.options.edge_normalization)

    def phases(self) -> list[Phase]:
        o = self.options
        return [Phase("pcdarts", self.ctx.cfg.epochs, o.lr, 0.0,
                      f"K={o.K}, α/β frozen for {o.arch_warmup_epochs} epoch(s)", 1)]

    def make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        o = self.options
        return ClippedSGD(self.model.weight_parameters(), o.grad_clip, lr=phase.lr, momentum=o.momentum,
                          weight_decay=o.weight_decay)

    def lr_factor(self, it: int, total: int, warmup: int) -> float:
        """Cosine from lr to lr_min over the epochs, constant within an epoch."""
        return epoch_cosine(it, total, self._epochs, self.options.lr_min / self.options.lr)

    # -- data ------------------------------------------------------------------------
    def epoch_order(self, phase: int, epoch: int, n: int) -> np.ndarray:
        """A seeded permutation of the weight half (a multiple of the worker count long,
        so every worker gets the same number of batches)."""
        order = derived_rng(self.ctx.seed, 7102, phase, epoch).permutation(self.weight_idx)
        world = self.ctx.dist.world_size
        return order[: len(order) - len(order) % world]

    def _arch_shard(self, epoch: int) -> np.ndarray:
        order = derived_rng(self.ctx.seed, 7103, epoch).permutation(self.arch_idx)
        world, rank = self.ctx.dist.world_size, self.ctx.dist.rank
        order = order[: len(order) - len(order) % world]
        return order[rank::world]

    def arch_batch(self, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of this worker's shard of the architecture half (an epoch of it
        ends when fewer than ``bs`` images are left; then it is reshuffled)."""
        shard = self._arch_shard(self.arch_epoch)
        bs = min(bs, len(shard))
        if self.arch_pos + bs > len(shard):
            self.arch_epoch += 1
            self.arch_pos = 0
            shard = self._arch_shard(self.arch_epoch)
        idx = shard[self.arch_pos:self.arch_pos + bs]
        self.arch_pos += bs
        # augmented like the weight batches: the official search draws both halves from one
        # training set with the training transform (crop + flip)
        x, y, _ = next(iter(self.ctx.data.batches("train", len(idx), idx, augment=True)))
        return x.to(self.ctx.device), y.to(self.ctx.device)

    # -- the step --------------------------------------------------------------------
    def arch_step(self, bs: int) -> float:
        net, dist = self.model, self.ctx.dist
        params = net.arch_parameters()
        xa, ya = self.arch_batch(bs)
        for p in params:
            p.grad = None
        loss = F.cross_entropy(net(xa), ya)
        loss.backward(inputs=params)
        if dist.world_size > 1:
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            dist.all_reduce_mean(flat)
            off = 0
            for p in params:
                p.grad.copy_(flat[off:off + p.numel()].view_as(p))
                off += p.numel()
        self.arch_opt.step()
        if dist.world_size > 1:  # bit-identical α, β on every worker
            with torch.no_grad():
                flat = torch.cat([p.reshape(-1) for p in params])
                dist.broadcast(flat, 0)
                off = 0
                for p in params:
                    p.copy_(flat[off:off + p.numel()].view_as(p))
                    off += p.numel()
        for p in params:
            p.grad = None
        return float(loss.detach())

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, info: StepInfo) -> StepOutput:
        extra = {}
        if info.epoch >= self.options.arch_warmup_epochs:
            extra["arch_loss"] = self.arch_step(x.shape[0])
            self._arch_losses.append(extra["arch_loss"])
        out = self.model(x)
        loss = F.cross_entropy(out, y, label_smoothing=self.options.label_smoothing)
        loss.backward(inputs=self.model.weight_parameters())
        return StepOutput(float(loss.detach()), [], None, extra)

    # -- epochs, genotype, state ----------------------------------------------------------
    @property
    def genotype_path(self) -> Path:
        return Path(self.ctx.run_dir) / "supernet" / "genotype.json"

    def _write_genotype(self, epoch: int) -> dict[str, Any]:
        geno = self.model.genotype()
        if self.ctx.dist.is_main:
            record = {**geno, "epoch": epoch, "space": self.ctx.space.config.name}
            write_json(self.genotype_path, record)
            self._history[str(epoch)] = geno
            write_json(self.genotype_path.with_name("genotype_history.json"), self._history)
        return geno

    def end_epoch(self, phase: int, epoch: int) -> dict[str, float]:
        geno = self._write_genotype(epoch + 1)
        say(f"  genotype after epoch {epoch + 1}: {json.dumps(geno, separators=(',', ':'))}", self.ctx.dist.is_main)
        out: dict[str, float] = {}
        if self._arch_losses:
            out["arch_loss"] = float(np.mean(self._arch_losses))
            self._arch_losses = []
        every = self.options.eval_every
        if every and ((epoch + 1) % every == 0 or epoch + 1 == self._epochs) and self.ctx.dist.is_main:
            from ...supernet.evaluate import accuracy

            out["val_acc"] = accuracy(self.model, self.ctx.data, "val", None, 256)
        return out

    def finish(self) -> None:
        self._write_genotype(self._epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"arch_opt": self.arch_opt.state_dict(), "arch_epoch": self.arch_epoch, "arch_pos": self.arch_pos,
                "history": json.dumps(self._history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.arch_opt.load_state_dict(state["arch_opt"])
        self.arch_epoch = int(state["arch_epoch"])
        self.arch_pos = int(state["arch_pos"])
        self._history = json.loads(state.get("history", "{}"))
