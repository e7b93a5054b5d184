"""Subnet evaluation through the supernet: extract -> BN recalibration -> validation."""
from __future__ import annotations

import torch
from torch import nn

from ..data import DataBundle
from ..space import Arch
from ._base import Supernet
from .bn import recalibrate_bn, resize


@torch.no_grad()
def accuracy(model: nn.Module, data: DataBundle, split: str = "val", resolution: int | None = None,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on a split, inputs resized to ``resolution``."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y, _ in data.batches(split, batch_size):  # type: ignore[arg-type]
        pred = model(resize(x, resolution)).argmax(1)
        correct += int((pred == y).sum())
        total += len(y)
    model.train(was)
    return correct / max(1, total)


def extract_calibrated(supernet: Supernet, arch: Arch, data: DataBundle, calib_images: int | None = None,
                       batch_size: int = 100) -> nn.Module:
    """The static subnet with BN statistics recomputed on the calibration images."""
    static = supernet.extract(arch)
    recalibrate_bn(static, data.calib_batches(batch_size, calib_images), supernet.space.resolution(arch))
    return static.eval()


def evaluate_arch(supernet: Supernet, arch: Arch, data: DataBundle, calib_images: int | None = None,
                  split: str = "val") -> tuple[float, nn.Module]:
    """(accuracy, calibrated static subnet) for ``arch``."""
    static = extract_calibrated(supernet, arch, data, calib_images)
    return accuracy(static, data, split, supernet.space.resolution(arch)), static
