"""scikit-learn's 8x8 handwritten digits (1797 images, shipped with scikit-learn):
the embedded default data set, upscaled to ``data.resolution``."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ._base import DATASETS, DataBundle, DataConfig, TensorData, fixed_split, to_channels

MEAN, STD = 0.3, 0.4


@DATASETS.register("digits")
def load_digits(cfg: DataConfig, channels: int, base_dir: Path | None = None) -> DataBundle:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(cfg.resolution, cfg.resolution), mode="bilinear", align_corners=False)
    x = (x - MEAN) / STD  # roughly zero mean, unit variance
    x = to_channels(x, channels).contiguous()
    y = torch.tensor(d.target, dtype=torch.int64)
    train, val, calib = fixed_split(len(y), cfg.val_fraction, cfg.calib_images)
    return DataBundle(TensorData(x[train], y[train]), TensorData(x[val], y[val]),
                      TensorData(x[calib], y[calib]), 10, channels, cfg.resolution,
                      mean=(MEAN,) * channels, std=(STD,) * channels, augment=cfg.augment)
