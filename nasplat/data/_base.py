"""Datasets as train / val / calibration splits behind one small interface.

Small data sets live in memory as tensors (digits, CIFAR-10) and are batched by
slicing, which is far faster than a per-item DataLoader on a 2-core machine; their
training augmentation runs on whole batches on the batch's device. Folder data sets
go through a DataLoader (``data.loader_workers`` worker processes, persistent across
epochs, pinned memory when the batches go to a GPU) whose workers decode and augment.
Augmentation (:mod:`.augment`) is applied only when a caller asks for it
(``batches(..., augment=True)``, the training engine); every other reader gets the
un-augmented images. Per-sample indices are exact either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset

from ..registry import Registry
from .augment import AugmentConfig, BatchAugment

Split = Literal["train", "val", "calib"]


class DataConfig(BaseModel):
    """The ``data:`` section of an experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "digits"
    path: str | None = None  # resolved relative to the experiment file
    resolution: int = Field(32, ge=8, le=1024)  # stored image size; subnets resize per batch
    batch_size: int = Field(64, ge=1)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # when the data set has no val split
    calib_images: int = Field(2000, ge=1)  # training images for BN recalibration (OFA: 2000; capped at the train split)
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes (folder data)
    augment: AugmentConfig = AugmentConfig()  # training augmentation; see nasplat.data.augment
    check_images: bool = True  # folder data: decode every image once when the data set is opened


class TensorData(Dataset):
    """Images ``x`` (N, C, H, W) float and labels ``y`` (N,) int64, in memory."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        assert len(x) == len(y)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


class _Order(torch.utils.data.Sampler):
    """A sampler whose index order is set before each pass (one DataLoader, and so one
    set of persistent workers, serves every epoch)."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


@dataclass
class DataBundle:
    """The splits of one data set. ``mean``/``std`` are the per-channel normalisation
    the images carry (the augmentation works on un-normalised pixels);
    ``train_augmented`` is, for DataLoader data sets, the train split with the
    training transform (same samples, same indices as ``train``)."""

    train: Dataset
    val: Dataset
    calib: Dataset
    num_classes: int
    channels: int
    resolution: int
    workers: int = 0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train_augmented: Dataset | None = None
    _loaders: dict[tuple[Any, ...], tuple[DataLoader, _Order]] = field(default_factory=dict, repr=False)
    _augmenter: BatchAugment | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaders": {}}  # worker processes do not travel

    def split(self, split: Split) -> Dataset:
        return {"train": self.train, "val": self.val, "calib": self.calib}[split]

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        """The training augmentation of an in-memory batch, on ``x``'s device."""
        if self._augmenter is None:
            self._augmenter = BatchAugment(self.augment, self.mean, self.std)
        return self._augmenter(x)

    def batches(
        self,
        split: Split,
        batch_size: int,
        order: np.ndarray | None = None,
        drop_last: bool = False,
        *,
        augment: bool = False,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, indices)``; ``order`` (may repeat indices) defaults to 0..N-1.

        Args:
            augment: apply the ``data.augment`` training augmentation (train split; the
                training engine alone asks for it).
            device: move ``x`` and ``y`` there (pinned, non-blocking copies to a GPU);
                ``indices`` stay on the CPU.
        """
        ds = self.split(split)
        n = len(ds)
        order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        dev = torch.device(device) if device is not None else None
        cuda = dev is not None and dev.type == "cuda"
        augment = augment and self.augment.enabled
        if isinstance(ds, TensorData):
            for s in range(0, stop, batch_size):
                idx = torch.from_numpy(order[s : min(s + batch_size, stop)])
                if not len(idx):
                    continue
                x, y = ds.x[idx], ds.y[idx]
                if dev is not None:
                    x = (x.pin_memory() if cuda else x).to(dev, non_blocking=True)
                    y = y.to(dev, non_blocking=True)
                yield (self.augment_batch(x) if augment else x), y, idx
            return
        if augment and split == "train" and self.train_augmented is not None:
            ds = self.train_augmented
        key = (split, augment, batch_size, cuda)
        loader, sampler = self._loaders.pop(key, None) or self._new_loader(ds, batch_size, cuda)
        sampler.order = order[:stop].tolist()
        s = 0
        try:  # while this pass runs the loader is out of the cache (a nested pass gets its own)
            for batch in loader:
                x, y = batch[0], batch[1]
                errors = [e for e in batch[2] if e] if len(batch) > 2 else []
                if errors:
                    from ..errors import UserError

                    path, _, reason = errors[0].partition("\0")
                    raise UserError(f"cannot read image ({reason})", path, "data.path")
                idx = torch.from_numpy(order[s : s + len(y)])
                s += len(y)
                y = torch.as_tensor(y, dtype=torch.int64)
                if dev is not None:
                    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                yield x, y, idx
        finally:
            self._loaders.setdefault(key, (loader, sampler))

    def _new_loader(self, ds: Dataset, batch_size: int, pin: bool) -> tuple[DataLoader, _Order]:
        sampler = _Order()
        loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=self.workers,
                            pin_memory=pin, persistent_workers=self.workers > 0)
        return loader, sampler

    def calib_batches(self, batch_size: int = 100, images: int | None = None) -> list[torch.Tensor]:
        """The calibration images as a list of batches (the same every call)."""
        n = len(self.calib) if images is None else min(images, len(self.calib))
        return [x for x, _, _ in self.batches("calib", batch_size, np.arange(n))]


DATASETS: Registry = Registry("data set")


def fixed_split(n: int, val_fraction: float, calib: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed (seed 0) train / val / calib index split; calib is a subset of train."""
    perm = np.random.default_rng(0).permutation(n)
    n_val = int(round(n * val_fraction))
    val, train = np.sort(perm[:n_val]), perm[n_val:]
    calib_idx = np.sort(train[: min(calib, len(train))])
    return np.sort(train), val, calib_idx


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat grayscale to ``channels`` or check the count matches."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.repeat(1, channels, 1, 1)
    raise ValueError(f"data has {x.shape[1]} channels, the space wants {channels}")


def load_data(cfg: DataConfig, channels: int, base_dir: Path | None = None) -> DataBundle:
    """Build the data set named in ``cfg`` (path resolved relative to ``base_dir``)."""
    reader = DATASETS.get(cfg.name, None, "data.name")
    return reader(cfg, channels, base_dir)


def load_experiment_data(exp: Any) -> DataBundle:
    """The data set of an experiment (``exp``: a :class:`nasplat.experiment.Experiment`),
    its path resolved against the experiment file; errors name the experiment file, and
    a class count that differs from the space's is refused."""
    from ..errors import UserError

    cfg = exp.config
    try:
        data = load_data(cfg.data, exp.space.config.input_channels, exp.base_dir)
    except UserError as e:
        if e.file is not None:
            raise
        raise UserError(e.message, exp.path, e.field) from None  # name the experiment file
    if data.num_classes != exp.space.config.num_classes:
        raise UserError(f"the space has {exp.space.config.num_classes} classes but data set "
                        f"{cfg.data.name!r} has {data.num_classes}", exp.space.source or exp.path, "num_classes")
    return data
