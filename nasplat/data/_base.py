"""Datasets as train / val / calibration splits behind one small interface.

Small data sets live in memory as tensors (digits, CIFAR-10) and are batched by
slicing, which is far faster than a per-item DataLoader on a 2-core machine;
folder data sets go through a DataLoader.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset, Subset

from ..registry import Registry

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
    loader_workers: int = Field(0, ge=0)


class TensorData(Dataset):
    """Images ``x`` (N, C, H, W) float and labels ``y`` (N,) int64, in memory."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        assert len(x) == len(y)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    calib: Dataset
    num_classes: int
    channels: int
    resolution: int
    workers: int = 0

    def split(self, split: Split) -> Dataset:
        return {"train": self.train, "val": self.val, "calib": self.calib}[split]

    def batches(
        self,
        split: Split,
        batch_size: int,
        order: np.ndarray | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, indices)``; ``order`` (may repeat indices) defaults to 0..N-1."""
        ds = self.split(split)
        n = len(ds)
        order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        if isinstance(ds, TensorData):
            for s in range(0, stop, batch_size):
                idx = torch.from_numpy(order[s : min(s + batch_size, stop)])
                if len(idx):
                    yield ds.x[idx], ds.y[idx], idx
            return
        loader = DataLoader(Subset(ds, order[:stop].tolist()), batch_size=batch_size, shuffle=False,
                            num_workers=self.workers)
        s = 0
        for x, y in loader:
            idx = torch.from_numpy(order[s : s + len(y)])
            s += len(y)
            yield x, torch.as_tensor(y, dtype=torch.int64), idx

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
