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
auxiliary head), so ``nasplat.supernet.darts_cell.load_trained_derived(space, run_dir)``
(or ``load_standalone``) rebuilds it for export.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ...errors import UserError
from ...io import write_json
from ...supernet import build_supernet, resize
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


def build_standalone(space: Any, options: StandaloneOptions) -> nn.Module:
    """The fixed network the options describe (fresh weights)."""
    if options.genotype is not None:
        from ...supernet.darts_cell import build_derived

        return build_derived(space, options.genotype, options.auxiliary, options.drop_path)
    arch = space.arch(options.arch, "train.options.arch")
    if space.family == "darts_cell":
        from ...supernet.darts_cell import build_derived

        return build_derived(space, space.genotype_of(arch), options.auxiliary, options.drop_path)
    net = build_supernet(space).extract(arch)
    for m in net.modules():  # fresh weights: the supernet was never trained
        if hasattr(m, "reset_parameters") and m is not net:
            m.reset_parameters()
    return net


def load_standalone(space: Any, run_dir: str | Path) -> nn.Module:
    """The network trained by ``standalone`` in ``run_dir``, weights loaded, eval mode."""
    import json

    from ..checkpoint import load_weights

    sdir = Path(run_dir) / "supernet"
    info_path = sdir / "derived.json"
    if not info_path.is_file():
        raise UserError("no stand-alone network here (train it with strategy 'standalone' first)", info_path)
    info = json.loads(info_path.read_text())
    opts = StandaloneOptions(genotype=info.get("genotype"), arch=info.get("arch") if info.get("genotype") is None
                             else None, auxiliary=bool(info.get("auxiliary", False)))
    net = build_standalone(space, opts)
    load_weights(sdir / "supernet.safetensors", net, space.hash())
    return net.eval()


@STRATEGIES.register("standalone")
class Standalone(Strategy):
    name = "standalone"
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
            write_json(Path(ctx.run_dir) / "supernet" / "derived.json", info)
        self._last_acc: float | None = None

    def build_model(self) -> nn.Module:
        return build_standalone(self.ctx.space, self.options)

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
