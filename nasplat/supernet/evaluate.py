"""Subnet evaluation through the supernet: extract -> BN recalibration -> validation.

:class:`SubnetEvaluator` prepares everything a search evaluates many subnets with once
(the calibration images, OFA's random training images drawn with the experiment's seed;
the validation batches) and times each step of :meth:`SubnetEvaluator.evaluate`
separately, so costs are compared like with like (extract + recalibration against
OFA's extract + ``set_running_statistics``; validation on its own).

Speed options, all off by default (the bench ``eval_cost`` measures each one and its
rank fidelity against OFA's 2000-image recalibration):

- ``calib_images`` / ``calib_batch``: fewer calibration images cost proportionally
  less; one large batch saves per-batch overhead (the statistics are OFA's
  batch-size-weighted averages either way);
- ``channels_last``: the subnet and its inputs in NHWC memory layout (oneDNN's
  preferred layout for convolutions on CPU);
- ``validation="onnxruntime"``: the calibrated subnet is exported to ONNX and the
  validation set run through ONNX Runtime (pays an export per subnet, wins when the
  validation set is large).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Literal

import torch
from torch import nn

from ..data import DataBundle
from ..space import Arch
from ._base import Supernet
from .bn import calibration_batches, recalibrate_bn, resize

Validation = Literal["torch", "onnxruntime"]


@torch.no_grad()
def accuracy(model: nn.Module, data: DataBundle, split: str = "val", resolution: int | None = None,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on a split, inputs resized to ``resolution``."""
    batches = [(x, y) for x, y, _ in data.batches(split, batch_size)]  # type: ignore[arg-type]
    was = model.training
    model.eval()
    acc = batch_accuracy(model, batches, resolution)
    model.train(was)
    return acc


@torch.no_grad()
def batch_accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   resolution: int | None = None, channels_last: bool = False) -> float:
    """Top-1 accuracy of ``model`` (already in eval mode) over ``(x, y)`` batches."""
    correct = total = 0
    for x, y in batches:
        x = resize(x, resolution)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(1, total)


def ort_accuracy(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], resolution: int,
                 threads: int = 1) -> float:
    """Top-1 accuracy through ONNX Runtime (the subnet exported once, dynamic batch)."""
    import numpy as np

    from ..onnxio import ort_session, to_onnx

    shape = (1, batches[0][0].shape[1], resolution, resolution)
    sess = ort_session(to_onnx(model, shape, dynamic_batch=True).data, threads)
    name = sess.get_inputs()[0].name
    correct = total = 0
    for x, y in batches:
        logits = sess.run(None, {name: resize(x, resolution).numpy()})[0]
        correct += int((np.argmax(logits, 1) == y.numpy()).sum())
        total += len(y)
    return correct / max(1, total)


def extract_calibrated(supernet: Supernet, arch: Arch, data: DataBundle, calib_images: int | None = None,
                       batch_size: int = 200, seed: int = 0) -> nn.Module:
    """The static subnet with BN statistics recomputed on the calibration images (OFA's
    protocol by default: 2000 random training images, batch 200)."""
    static = supernet.extract(arch)
    recalibrate_bn(static, calibration_batches(data, calib_images, seed, batch_size), supernet.space.resolution(arch))
    return static.eval()


def evaluate_arch(supernet: Supernet, arch: Arch, data: DataBundle, calib_images: int | None = None,
                  split: str = "val", seed: int = 0) -> tuple[float, nn.Module]:
    """(accuracy, calibrated static subnet) for ``arch``."""
    static = extract_calibrated(supernet, arch, data, calib_images, seed=seed)
    return accuracy(static, data, split, supernet.space.resolution(arch)), static


@dataclass
class Evaluation:
    accuracy: float
    extract_s: float
    recal_s: float
    val_s: float

    @property
    def seconds(self) -> float:
        return self.extract_s + self.recal_s + self.val_s


class SubnetEvaluator:
    """Evaluates many subnets of one supernet on prepared batches (see the module docstring).

    Args:
        supernet: the trained supernet (eval mode is set here).
        data: the experiment's data.
        calib_images: calibration images (None: OFA's 2000, or the training split when smaller).
        calib_batch: calibration batch size (OFA: 200).
        seed: the experiment's seed (which training images calibrate).
        val_images: validation images (None: the whole split).
        val_batch: validation batch size.
        channels_last: NHWC layout for the subnet and its inputs.
        validation: ``"torch"`` (eager) or ``"onnxruntime"``.
        threads: ONNX Runtime intra-op threads (``validation="onnxruntime"``).
        device: where the subnets run (the supernet is expected there too); ONNX Runtime
            validation stays on the CPU.
        precision: ``fp32``, ``bf16`` or ``fp16`` (``torch.autocast`` around recalibration
            and validation).
    """

    def __init__(self, supernet: Supernet, data: DataBundle, *, calib_images: int | None = None,
                 calib_batch: int = 200, seed: int = 0, val_images: int | None = None, val_batch: int = 500,
                 channels_last: bool = False, validation: Validation = "torch", threads: int = 1,
                 device: torch.device | str = "cpu", precision: str = "fp32"):
        import numpy as np

        self.supernet = supernet.eval()
        self.space = supernet.space
        self.device, self.precision = torch.device(device), precision
        self.calib = [x.to(self.device) for x in calibration_batches(data, calib_images, seed, calib_batch)]
        n_val = len(data.val) if val_images is None else min(int(val_images), len(data.val))
        val_device = self.device if validation == "torch" else None
        self.val = [(x, y) for x, y, _ in data.batches("val", val_batch, np.arange(n_val), device=val_device)]
        self.channels_last = channels_last
        self.validation = validation
        self.threads = threads
        if channels_last:
            self.calib = [x.contiguous(memory_format=torch.channels_last) for x in self.calib]

    def evaluate(self, arch: Arch) -> Evaluation:
        from ..device import autocast

        t0 = time.perf_counter()
        static = self.supernet.extract(arch).to(self.device)
        if self.channels_last:
            static = static.to(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        res = self.space.resolution(arch)
        with autocast(self.device, self.precision):
            recalibrate_bn(static, self.calib, res)
        static.eval()
        t2 = time.perf_counter()
        if self.validation == "onnxruntime":
            acc = ort_accuracy(static.cpu().to(memory_format=torch.contiguous_format), self.val, res, self.threads)
        else:
            with autocast(self.device, self.precision):
                acc = batch_accuracy(static, self.val, res, self.channels_last)
        return Evaluation(acc, t1 - t0, t2 - t1, time.perf_counter() - t2)
