"""``standalone``: train one fixed network from scratch on the labels.

The network is either a genotype (``options.genotype``: a JSON file such as the
``genotype.json`` a ``pcdarts`` search wrote, or an inline mapping) built as the
derived network of a ``darts_cell`` space — cells and channels from the space YAML,
optional DARTS auxiliary head (``auxiliary``, loss weight ``auxiliary_weight``) and
drop-path (``drop_path``, raised linearly from 0 over the epochs as in DARTS) — or an
``arch`` of any family's space, built as that arch's static network with fresh weights.

Paths are relative to the working directory (like ``output_dir``). The trained weights
go to ``runs/<name>/supernet/supernet.safetensors`` as for every strategy, and
``runs/<name>/supernet/derived.json`` records what was built (genotype or arch,
auxiliary head), so :func:`nasplat.supernet.standalone.load_standalone` rebuilds it for
export.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ...io import write_json
from ...supernet import resize
from ...supernet.standalone import DERIVED_FILE, build_standalone
from ._base import STRATEGIES, StepInfo, StepOutput, Strategy


class StandaloneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    genotype: str | dict[str, Any] | None = None
    arch: dict[str, Any] | None = None
    auxiliary: bool = False
    auxiliary_weight: float = Field(0.4, ge=0)
    drop_path: float = Field(0.0, ge=0, lt=1)
    eval_every: int = Field(1, ge=0)  # val accuracy every N epochs (0: only at the end)

    @model_validator(mode="after")
    def _one(self) -> "StandaloneOptions":
        if (self.genotype is None) == (self.arch is None):
            raise ValueError("set exactly one of 'genotype' (a file or mapping) and 'arch'")
        return self


@STRATEGIES.register("standalone")
class Standalone(Strategy):
    Options = StandaloneOptions
    options: StandaloneOptions

    def __init__(self, ctx: Any, options: StandaloneOptions):
        super().__init__(ctx, options)
        self.resolution = ctx.space.resolutions()[-1] if options.arch is None else \
            ctx.space.resolution(ctx.space.arch(options.arch))
        self.derived = hasattr(self.model, "drop_path_prob")
        if ctx.dist.is_main:
            info: dict[str, Any] = {"space": ctx.space.config.name, "auxiliary": self.options.auxiliary,
                                    "resolution": self.resolution}
            if self.derived:
                info["genotype"] = self.model.genotype  # type: ignore[attr-defined]
            else:
                info["arch"] = dict(ctx.space.arch(options.arch))
            write_json(Path(ctx.run_dir) / "supernet" / DERIVED_FILE, info)
        self._last_acc: float | None = None

    def build_model(self) -> nn.Module:
        o = self.options
        return build_standalone(self.ctx.space, genotype=o.genotype, arch=o.arch, auxiliary=o.auxiliary,
                                drop_path=o.drop_path)

    def begin_epoch(self, phase: int, epoch: int) -> None:
        if self.derived:
            self.model.drop_path_prob = self.options.drop_path * epoch / max(1, self.ctx.cfg.epochs)

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
