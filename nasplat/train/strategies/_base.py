"""The strategy plug-in contract.

The engine owns the loop (phases -> epochs -> steps, optimizer step, schedule,
checkpoints, logging); a strategy decides which subnets a step trains and how
(``step`` runs forward and backward, gradients accumulate), its phases, its data
order and any state it must checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ...data import DataBundle
from ...registry import Registry
from ...space import Arch, SearchSpace, validate
from ...supernet import Supernet, build_supernet
from ..config import TrainConfig
from ..distributed import Dist


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Phase:
    name: str
    epochs: int
    lr: float
    warmup_epochs: float = 0.0
    restriction: str = "full space"  # shown in the log
    subnets_per_step: int = 1


@dataclass
class StepInfo:
    phase: int
    epoch: int
    step: int  # within the epoch
    global_step: int


@dataclass
class StepOutput:
    loss: float
    archs: list[Arch] = field(default_factory=list)
    resolution: int | None = None
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainContext:
    space: SearchSpace
    data: DataBundle
    cfg: TrainConfig
    seed: int
    run_dir: Path
    device: torch.device
    dist: Dist
    base_dir: Path = Path(".")  # relative paths in train options resolve against it (the experiment's folder)


def epoch_cosine(it: int, total: int, epochs: int, floor: float = 0.0) -> float:
    """LR factor of a cosine from 1 to ``floor`` over ``epochs``, constant within an epoch
    (DARTS / PC-DARTS step their scheduler once per epoch)."""
    per_epoch = max(1, total // max(1, epochs))
    t = min(1.0, (it // per_epoch) / max(1, epochs))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def derived_rng(*keys: int) -> np.random.Generator:
    """A generator seeded from integers (seed, epoch, step, j...) so every worker agrees."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


class Strategy(ABC):
    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    # True when ``step`` runs an optimizer step of its own (PC-DARTS' architecture step):
    # the engine then refuses fp16, whose loss scaling would reach that step unscaled.
    steps_own_optimizer: ClassVar[bool] = False

    def __init__(self, ctx: TrainContext, options: BaseModel):
        defaults = {k: v for k, v in self.train_defaults(options, ctx.space).items()
                    if k not in ctx.cfg.model_fields_set}
        self.ctx = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update=defaults)) if defaults else ctx
        self.options = options
        self.model: nn.Module = self.build_model().to(ctx.device)

    @classmethod
    def parse_options(cls, data: dict[str, Any], source: Any = None) -> BaseModel:
        return validate(cls.Options, data, source, "train.options")

    # -- hooks with defaults -------------------------------------------------------
    @classmethod
    def train_defaults(cls, options: BaseModel, space: SearchSpace) -> dict[str, Any]:
        """Values for ``train:`` fields the experiment leaves unset (e.g. the official
        hyper-parameters of a method); read once, when the strategy is built. Fields the
        experiment sets always win. Default: none."""
        return {}

    def build_model(self) -> nn.Module:
        return build_supernet(self.ctx.space)

    @property
    def supernet(self) -> Supernet:
        assert isinstance(self.model, Supernet)
        return self.model

    def phases(self) -> list[Phase]:
        c = self.ctx.cfg
        return [Phase("train", c.epochs, c.lr, c.warmup_epochs)]

    def begin_phase(self, index: int, phase: Phase) -> None:
        """Called at a phase's start (also when resuming into it)."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weight decay on conv/linear weights only (not BN, bias, kernel transforms)."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim > 1 and "transforms" not in name else no_decay).append(p)
        return [{"params": decay, "weight_decay": self.ctx.cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    def make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        c = self.ctx.cfg
        return torch.optim.SGD(self.parameter_groups(), lr=phase.lr, momentum=c.momentum,
                               nesterov=c.nesterov and c.momentum > 0)

    def clip_gradients(self) -> None:
        """Called every step after the gradients are complete (all-reduced over workers),
        right before the optimizer step. Default: clip the global gradient norm to
        ``train.grad_clip`` when it is set. Strategies that clip differently or read the
        clipped gradients override it."""
        clip = self.ctx.cfg.grad_clip
        if clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)

    def lr_factor(self, it: int, total: int, warmup: int) -> float:
        """Linear warm-up then cosine to 0, per iteration."""
        if warmup and it < warmup:
            return (it + 1) / warmup
        t = (it - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    def epoch_order(self, phase: int, epoch: int, n: int) -> np.ndarray:
        """Training indices for this epoch (all workers compute the same order)."""
        return derived_rng(self.ctx.seed, 101, phase, epoch).permutation(n)

    def begin_epoch(self, phase: int, epoch: int) -> None:
        pass

    def end_epoch(self, phase: int, epoch: int) -> dict[str, float]:
        """Called after the last step of an epoch; may return values for the log."""
        return {}

    def finish(self) -> None:
        """Called once after the last phase (e.g. to write a genotype)."""

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint: tensors and JSON-able values only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # -- what every strategy implements ----------------------------------------------
    @abstractmethod
    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, info: StepInfo) -> StepOutput:
        """Forward + backward of this step's subnets (gradients add up)."""


STRATEGIES: Registry[type[Strategy]] = Registry("training strategy", name_attr="name")
