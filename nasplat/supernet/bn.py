"""BN recalibration: a subnet's BN statistics must be recomputed before it is evaluated,
because the supernet's running stats mix every subnet trained."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def resize(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Bilinear resize of a batch to ``resolution`` (no-op if it already matches)."""
    if resolution is None or x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], resolution: int | None = None) -> int:
    """Reset every BN's running stats and set them to the cumulative average over
    ``batches`` (forwarded in train mode, no gradients). Returns images seen."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    seen = 0
    try:
        for x in batches:
            model(resize(x, resolution))
            seen += x.shape[0]
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    return seen
