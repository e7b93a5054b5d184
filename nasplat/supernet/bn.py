"""BN recalibration: a subnet's BN statistics must be recomputed before it is evaluated,
because the supernet's running statistics mix every subnet trained.

Public API (used by evaluation, search, export and the benches):

- :func:`calibration_batches` ``(data, images=None, seed=0, batch_size=200)``: the
  calibration images, drawn at random from the TRAINING split (never val) with
  ``seed`` and without augmentation. Callers pass the experiment's seed, so every
  subnet of an experiment is calibrated on the same images, as in OFA (its subset is
  drawn once with a fixed seed). ``images=None`` means OFA's 2000, or the whole
  training split when it is smaller (digits: 1438 images).
- :func:`recalibrate_bn` ``(model, batches, resolution=None, mode="ofa")``: recompute
  every BN's running mean and variance over ``batches`` (resized to ``resolution``),
  without gradients, and return the number of images seen. Works on a static subnet
  and on a supernet with an arch active (an elastic BN over its first channels gets
  those channels' statistics, the rest are kept, as in OFA).

Modes:

``"ofa"`` (default): OFA's ``set_running_statistics``. Each BN normalises every batch
with that batch's own statistics and records the batch mean and BIASED variance; the
running mean / variance become their averages weighted by batch size. The module's
other statistics (``num_batches_tracked``, ``momentum``) are left as they were; every
other module runs in eval mode (dropout off).

``"cumulative"``: torch's cumulative moving average (``momentum=None``) after a reset:
the unweighted mean over batches of the batch mean and of the UNBIASED batch variance;
``num_batches_tracked`` counts the batches. This was nasplat's recalibration before it
followed OFA; it differs only in the small-batch corrections (unbiased variance, equal
weight of a short last batch).
"""
from __future__ import annotations

from typing import Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data import DataBundle

__all__ = ["OFA_CALIB_IMAGES", "calibration_batches", "recalibrate_bn", "resize"]

Mode = Literal["ofa", "cumulative"]
OFA_CALIB_IMAGES = 2000  # OFA's reset_running_statistics: subset_size=2000
OFA_CALIB_BATCH = 200  # ... and subset_batch_size=200


def resize(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Bilinear resize of a batch to ``resolution`` (no-op if it already matches)."""
    if resolution is None or x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def calibration_batches(data: DataBundle, images: int | None = None, seed: int = 0,
                        batch_size: int = OFA_CALIB_BATCH) -> list[torch.Tensor]:
    """``images`` random training images (un-augmented) drawn with ``seed``, in batches.

    ``images=None``: OFA's 2000, capped at the training split's size; a larger count
    is capped too (the images are drawn without replacement).
    """
    n_train = len(data.train)
    n = min(OFA_CALIB_IMAGES if images is None else int(images), n_train)
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xBC]).permutation(n_train)[:n]
    return [x for x, _, _ in data.batches("train", batch_size, order)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], resolution: int | None = None,
                   mode: Mode = "ofa") -> int:
    """Recompute the BN running statistics of ``model`` over ``batches``; returns the
    number of images seen. ``mode``: ``"ofa"`` (default) or ``"cumulative"`` (see the
    module docstring)."""
    if mode == "ofa":
        return _recalibrate_ofa(model, batches, resolution)
    if mode == "cumulative":
        return _recalibrate_cumulative(model, batches, resolution)
    raise ValueError(f"unknown BN recalibration mode {mode!r} (ofa, cumulative)")


def _recalibrate_ofa(model: nn.Module, batches: Iterable[torch.Tensor], resolution: int | None) -> int:
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    # per BN: [images, Σ n·mean, Σ n·var] (float64 sums)
    acc: dict[nn.Module, list] = {m: [0, None, None] for m in bns}

    def record(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        x = inp[0]
        dims = [0] + list(range(2, x.dim()))
        var, mean = torch.var_mean(x.double(), dim=dims, correction=0)
        a, n = acc[m], x.shape[0]
        a[0] += n
        a[1] = n * mean if a[1] is None else a[1] + n * mean
        a[2] = n * var if a[2] is None else a[2] + n * var

    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    modes = {m: m.training for m in model.modules()}
    hooks = [m.register_forward_pre_hook(record) for m in bns]
    seen = 0
    try:
        model.eval()
        for m in bns:
            m.momentum = 0.0  # normalise with batch statistics, leave the running ones alone
            m.train()
        for x in batches:
            model(resize(x, resolution))
            seen += x.shape[0]
    finally:
        for h in hooks:
            h.remove()
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        for m, training in modes.items():
            m.training = training
    for m in bns:
        n, s_mean, s_var = acc[m]
        if n and m.running_mean is not None:
            c = s_mean.numel()
            m.running_mean[:c].copy_((s_mean / n).to(m.running_mean.dtype))
            m.running_var[:c].copy_((s_var / n).to(m.running_var.dtype))
    return seen


def _recalibrate_cumulative(model: nn.Module, batches: Iterable[torch.Tensor], resolution: int | None) -> int:
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
