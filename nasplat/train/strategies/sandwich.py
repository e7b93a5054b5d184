"""``sandwich`` (BigNAS / AttentiveNAS): per step the largest, the smallest and n random
subnets; the largest learns from the labels, the others distil in place from it."""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from ...supernet import resize
from ..losses import label_smoothed_ce, soft_target_ce
from ._base import STRATEGIES, Phase, StepInfo, StepOutput, Strategy, derived_rng


class SandwichOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_random: int = Field(2, ge=0)


@STRATEGIES.register("sandwich")
class Sandwich(Strategy):
    Options = SandwichOptions
    options: SandwichOptions

    def phases(self) -> list[Phase]:
        c = self.ctx.cfg
        return [Phase("sandwich", c.epochs, c.lr, c.warmup_epochs, "full space",
                      2 + self.options.num_random)]

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, info: StepInfo) -> StepOutput:
        net, space = self.supernet, self.ctx.space
        rng = derived_rng(self.ctx.seed, info.phase, info.epoch, info.step)
        archs = [space.max_arch(), space.min_arch()] + [space.sample(rng) for _ in range(self.options.num_random)]
        total = 0.0
        soft = None
        for j, arch in enumerate(archs):
            net.set_active(arch)
            out = net(resize(x, space.resolution(arch)))
            if j == 0:
                loss = label_smoothed_ce(out, y, self.ctx.cfg.label_smoothing)
                soft = torch.softmax(out.detach(), dim=1)
            else:
                loss = soft_target_ce(out, soft)
            loss.backward()
            total += loss.item()
        return StepOutput(total / len(archs), archs, None)
