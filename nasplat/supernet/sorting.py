"""OFA's width importance sorting (``re_organize_middle_weights``).

At the start of each elastic-width ("expand") phase of progressive shrinking the
middle channels of every elastic MBConv block are reordered by importance
``Σ|W_project[:, c]|`` (the L1 norm of the pointwise-linear input column), so a
narrower subnet, which takes the first channels, gets the most important ones. The
permutation is applied to every tensor indexed by the middle channels (expand conv,
its BN, depthwise conv, its BN, SE reduce input / expand output, pointwise input; the
list comes from ``ElasticMBConv.middle_tensors()``), so the full-width network
computes exactly the same function afterwards.

Nesting that earlier phases trained is kept: channels are grouped into bands by the
widths already trained (``[0, w_smallest)``, ``[w_smallest, w_next)``, ...) and sorted
only within their band, which is what OFA's ``-k·1e5`` offsets per band do (here as
an exact lexicographic sort, independent of the importance magnitudes). A subnet of
any already-trained width therefore keeps its function too.

The SE hidden channels (whose width follows the active middle width) are then sorted
by ``Σ|W_se_expand[:, h]|`` as in OFA, without bands (OFA's code). That changes the
function of the narrower subnets trained in the first expand phase a little (their SE
takes other hidden channels afterwards). ``se_bands=True`` (a deviation, off by
default) applies the band rule to the SE hidden channels too, so the sort preserves
every trained width's function.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

__all__ = ["band_sort_order", "sort_block", "sort_middle_channels"]


def band_sort_order(importance: torch.Tensor, widths: Iterable[int]) -> torch.Tensor:
    """Indices sorting ``importance`` descending within the bands cut at ``widths``
    (channel ``c`` is in band ``#{w in widths : c >= w}``); bands stay in order."""
    n = importance.numel()
    band = torch.zeros(n, dtype=torch.long)
    for w in sorted(set(int(w) for w in widths)):
        if 0 < w < n:
            band[w:] += 1
    # stable sort on -importance, then stable sort on band = lexicographic (band, -importance)
    order = torch.sort(-importance.detach().double().cpu(), stable=True).indices
    order = order[torch.sort(band[order], stable=True).indices]
    return order


def _permute_(t: torch.Tensor, dim: int, order: torch.Tensor) -> None:
    with torch.no_grad():
        t.copy_(t.index_select(dim, order.to(t.device)))


def sort_block(block: nn.Module, keep_widths: Sequence[int], se_keep_widths: Sequence[int] = ()) -> torch.Tensor:
    """Sort one elastic MBConv block's middle channels in place; returns the order.

    ``keep_widths``: middle widths already trained (their nesting is kept);
    ``se_keep_widths``: the SE hidden widths of those subnets.
    """
    importance = block.project.weight.detach().abs().sum(dim=(0, 2, 3))
    order = band_sort_order(importance, keep_widths)
    for t, dim in block.middle_tensors():
        _permute_(t, dim, order)
    se = getattr(block, "se", None)
    if se is not None:
        se_imp = se.expand.weight.detach().abs().sum(dim=(0, 2, 3))
        se_order = band_sort_order(se_imp, se_keep_widths)
        _permute_(se.expand.weight, 1, se_order)
        _permute_(se.reduce.weight, 0, se_order)
        if se.reduce.bias is not None:
            _permute_(se.reduce.bias, 0, se_order)
    return order


def sort_middle_channels(supernet: nn.Module, trained_expands: int, se_bands: bool = False) -> int:
    """Sort every elastic MBConv block of an ``mbv3`` supernet; the ``trained_expands``
    largest expand ratios of each block are the widths trained so far (1 at the first
    expand phase: only the full width). ``se_bands``: keep the SE hidden channels of
    those widths nested too (not OFA's). Returns the number of blocks sorted."""
    space = supernet.space
    count = 0
    for i, blocks in enumerate(supernet.stages):
        for j, block in enumerate(blocks):
            expands = sorted(space.param(f"e{i}_{j}").choices, reverse=True)[: max(1, trained_expands)]
            widths = [space.mid_channels(block.cin, float(e)) for e in expands]
            se_widths = [space.se_channels(w) for w in widths] if se_bands else []
            sort_block(block, widths, se_widths)
            count += 1
    return count
