"""``standalone``: train one fixed network from scratch on the labels.

The network is either a genotype (``options.genotype``: a JSON file such as the
``genotype.json`` a ``pcdarts`` search wrote, or an inline mapping) built as the
derived network of a ``darts_cell`` space — cells and channels from the space YAML,
DARTS' auxiliary head after cell 2·cells//3 (``auxiliary``, loss weight
``auxiliary_weight``) and drop-path (``drop_path``, raised linearly from 0 over the
epochs) — or an ``arch`` of any family's space, built as that arch's static network with
fresh weights.

DARTS / PC-DARTS retraining (a ``darts_cell`` space) follows the official ``train.py``
for CIFAR: ``train:`` fields the experiment leaves unset get its values (SGD lr 0.025,
momentum 0.9 without Nesterov, weight decay 3e-4 on *all* weights, no label smoothing,
gradient-norm clip 5, no warm-up, cosine per epoch), the auxiliary head is on with
weight 0.4 and drop-path 0.3. Its data pipeline (random crop with 4-pixel padding,
horizontal flip, cutout 16) is the experiment's ``data.augment: {preset: darts, cutout:
16}``. Differences: the cosine is evaluated at epoch e/E (the official old-PyTorch
scheduler, stepped before each epoch, uses (e+1)/E, ending one epoch early at lr 0);
``auxiliary_pool: adaptive`` (off by default) pools the auxiliary head's input to 2x2
for maps that are not 8x8.

Paths are relative to the working directory (like ``output_dir``). The trained weights
go to ``runs/<name>/supernet/supernet.safetensors`` as for every strategy, and
``runs/<name>/supernet/derived.json`` records what was built (genotype or arch,
auxiliary head), so :func:`nasplat.supernet.standalone.load_standalone` rebuilds it for
export.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ...io import write_json
from ...supernet import resize
from ...supernet.standalone import DERIVED_FILE, build_standalone
from ...ui import say
from ._base import STRATEGIES, StepInfo, StepOutput, Strategy, epoch_cosine


class StandaloneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    genotype: str | dict[str, Any] | None = None
    arch: dict[str, Any] | None = None
    auxiliary: bool | None = None  # darts_cell: DARTS' auxiliary head (default on, as official); others: none
    auxiliary_weight: float = Field(0.4, ge=0)
    auxiliary_pool: Literal["darts", "adaptive"] = "darts"  # adaptive: a deviation for non-8x8 maps
    drop_path: float | None = Field(None, ge=0, lt=1)  # darts_cell: 0.3 (official), ramped from 0
    eval_every: int = Field(1, ge=0)  # val accuracy every N epochs (0: only at the end)

    @model_validator(mode="after")
    def _one(self) -> "StandaloneOptions":
        if (self.genotype is None) == (self.arch is None):
            raise ValueError("set exactly one of 'genotype' (a file or mapping) and 'arch'")
        return self


# DARTS / PC-DARTS train.py for CIFAR (yuhuixu1993/PC-DARTS): what a darts_cell retraining
# gets for the train: fields the experiment leaves unset
DARTS_RETRAIN = {"lr": 0.025, "momentum": 0.9, "nesterov": False, "weight_decay": 3e-4, "label_smoothing": 0.0,
                 "grad_clip": 5.0, "warmup_epochs": 0.0}


@STRATEGIES.register("standalone")
class Standalone(Strategy):
    Options = StandaloneOptions
    options: StandaloneOptions

    @classmethod
    def train_defaults(cls, options: BaseModel, space: Any) -> dict[str, Any]:
        return DARTS_RETRAIN if space.family == "darts_cell" else {}

    def __init__(self, ctx: Any, options: StandaloneOptions):
        super().__init__(ctx, options)
        self.resolution = ctx.space.resolutions()[-1] if options.arch is None else \
            ctx.space.resolution(ctx.space.arch(options.arch))
        self.derived = hasattr(self.model, "drop_path_prob")
        if self.derived and not ctx.data.augment.enabled:
            say("standalone: the official DARTS retraining augments the data (random crop + flip + cutout 16); "
                "data.augment is off", ctx.dist.is_main)
        if ctx.dist.is_main:
            info: dict[str, Any] = {"space": ctx.space.config.name, "auxiliary": self.auxiliary,
                                    "auxiliary_pool": self.options.auxiliary_pool, "resolution": self.resolution}
            if self.derived:
                info["genotype"] = self.model.genotype  # type: ignore[attr-defined]
            else:
                info["arch"] = dict(ctx.space.arch(options.arch))
            write_json(Path(ctx.run_dir) / "supernet" / DERIVED_FILE, info)
        self._last_acc: float | None = None

    @property
    def darts(self) -> bool:
        return self.ctx.space.family == "darts_cell"

    @property
    def auxiliary(self) -> bool:
        a = self.options.auxiliary
        return self.darts if a is None else a

    @property
    def drop_path(self) -> float:
        d = self.options.drop_path
        return (0.3 if self.darts else 0.0) if d is None else d

    def build_model(self) -> nn.Module:
        o = self.options
        return build_standalone(self.ctx.space, genotype=o.genotype, arch=o.arch, auxiliary=self.auxiliary,
                                drop_path=self.drop_path, aux_pool=o.auxiliary_pool)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """DARTS retraining decays every weight (the official SGD gets ``model.parameters()``)."""
        if not self.darts:
            return super().parameter_groups()
        return [{"params": [p for p in self.model.parameters() if p.requires_grad],
                 "weight_decay": self.ctx.cfg.weight_decay}]

    def lr_factor(self, it: int, total: int, warmup: int) -> float:
        """DARTS retraining: cosine per epoch (constant within an epoch); else the default."""
        if not self.darts:
            return super().lr_factor(it, total, warmup)
        return epoch_cosine(it, total, self.ctx.cfg.epochs)

    def begin_epoch(self, phase: int, epoch: int) -> None:
        if self.derived:
            self.model.drop_path_prob = self.drop_path * epoch / max(1, self.ctx.cfg.epochs)

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, info: StepInfo) -> StepOutput:
        ls = self.ctx.cfg.label_smoothing
        x = resize(x, self.resolution)
        if self.derived:
            out, aux = self.model(x, with_aux=True)
        else:
            out, aux = self.model(x), None
        loss = F.cross_entropy(out, y, label_smoothing=ls)
        if aux is not None:
            loss = loss + self.options.auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=ls)
        loss.backward()
        return StepOutput(float(loss.detach()), [], self.resolution)

    def end_epoch(self, phase: int, epoch: int) -> dict[str, float]:
        every = self.options.eval_every
        last = epoch + 1 == self.ctx.cfg.epochs
        if not self.ctx.dist.is_main or not (last or (every and (epoch + 1) % every == 0)):
            return {}
        from ...supernet.evaluate import accuracy

        self._last_acc = accuracy(self.model, self.ctx.data, "val", self.resolution, 256)
        return {"val_acc": self._last_acc}

    def finish(self) -> None:
        if self.ctx.dist.is_main and self._last_acc is not None:
            n_params = sum(p.numel() for n, p in self.model.named_parameters() if not n.startswith("aux_head"))
            write_json(Path(self.ctx.run_dir) / "supernet" / "standalone.json",
                       {"val_acc": self._last_acc, "params": n_params})
