"""``uniform``: single-path one-shot (Guo et al., SPOS) — the baseline sampler.

Each step trains exactly one subnet, drawn uniformly from the whole space (every
categorical choice uniform and independent, then canonicalised by the space), with
the step's generator ``derived_rng(seed, phase, epoch, step)`` so every worker draws
the same subnet without communicating. The loss is label-smoothed cross-entropy on
the labels (no distillation).
"""
from __future__ import annotations

import torch

from ...space import Arch
from ...supernet import resize
from ..losses import label_smoothed_ce
from ._base import STRATEGIES, Phase, StepInfo, StepOutput, Strategy, derived_rng


class SinglePath(Strategy):
    """One subnet per step; subclasses override :meth:`draw` (and may weight the loss)."""

    def phases(self) -> list[Phase]:
        c = self.ctx.cfg
        return [Phase(self.name, c.epochs, c.lr, c.warmup_epochs, "full space", 1)]

    def draw(self, info: StepInfo) -> Arch:
        return self.ctx.space.sample(derived_rng(self.ctx.seed, info.phase, info.epoch, info.step))

    def loss(self, out: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, arch: Arch) -> torch.Tensor:
        return label_smoothed_ce(out, y, self.ctx.cfg.label_smoothing)

    def after_backward(self, arch: Arch, out: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> dict[str, float]:
        return {}

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, info: StepInfo) -> StepOutput:
        net, space = self.supernet, self.ctx.space
        arch = self.draw(info)
        net.set_active(arch)
        res = space.resolution(arch)
        out = net(resize(x, res))
        loss = self.loss(out, y, idx, arch)
        loss.backward()
        extra = self.after_backward(arch, out.detach(), y, idx)
        return StepOutput(float(loss.detach()), [arch], res, extra)


@STRATEGIES.register("uniform")
class Uniform(SinglePath):
    """Single-path one-shot: one uniformly drawn subnet per step, plain cross-entropy."""
