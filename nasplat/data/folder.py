"""Images in the ImageFolder layout, read through timm's dataset and transform factories.

Layout under ``data.path``::

    train/<class>/*.png|jpg|...      required
    val/<class>/*                    optional; else a fixed split (seed 0) of train
                                     with ``data.val_fraction`` held out

Classes are the sub-folder names (natural sort order, as timm's reader does); a
``val`` folder must hold exactly the classes of ``train``. Images are decoded as
RGB for a 3-channel space and as grayscale ("L") otherwise (repeated when the space
wants neither 1 nor 3 channels), resized on the shorter side to ``data.resolution``,
centre-cropped and normalised (ImageNet mean/std; their channel average for
grayscale) by ``timm.data.create_transform``'s eval pipeline. Every split uses that
deterministic transform, as the in-memory data sets do (the training engine adds no
augmentation either); the calibration images are a fixed subset of train.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import UserError
from ._base import DATASETS, DataBundle, DataConfig, fixed_split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _RepeatChannels:
    """Repeat a 1-channel image tensor to ``channels`` (spaces with neither 1 nor 3)."""

    def __init__(self, channels: int):
        self.channels = channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(self.channels, 1, 1)


def make_transform(channels: int, resolution: int) -> Any:
    from timm.data import create_transform
    from torchvision import transforms

    rgb = channels == 3
    mean = IMAGENET_MEAN if rgb else (sum(IMAGENET_MEAN) / 3,)
    std = IMAGENET_STD if rgb else (sum(IMAGENET_STD) / 3,)
    tf = create_transform(input_size=(3 if rgb else 1, resolution, resolution), is_training=False,
                          interpolation="bilinear", mean=mean, std=std, crop_pct=1.0, crop_mode="center")
    if channels not in (1, 3):
        tf = transforms.Compose([tf, _RepeatChannels(channels)])
    return tf


def _image_folder(root: Path, transform: Any, channels: int) -> Any:
    """timm ``ImageDataset`` of one split folder, with UserErrors for bad layouts."""
    from timm.data import ImageDataset
    from timm.data.readers.img_extensions import get_img_extensions

    if not root.is_dir():
        raise UserError("folder not found", root, "data.path")
    exts = get_img_extensions(as_set=True)
    if not any(p.suffix.lower() in exts for p in root.rglob("*") if p.is_file()):
        raise UserError(f"no images found (expected {root.name}/<class>/<image> with one of "
                        f"{', '.join(sorted(exts))})", root, "data.path")
    try:
        ds = ImageDataset(str(root), input_img_mode="RGB" if channels == 3 else "L", transform=transform)
    except (RuntimeError, OSError) as e:
        raise UserError(f"cannot read image folder: {e}", root, "data.path") from None
    classes = ds.reader.class_to_idx
    if "" in classes:
        loose = next(p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in exts)
        raise UserError(f"image outside a class folder (expected {root.name}/<class>/<image>)", loose, "data.path")
    return ds


def class_names(ds: Any) -> list[str]:
    idx = ds.reader.class_to_idx
    return sorted(idx, key=idx.__getitem__)


@DATASETS.register("folder")
def load_folder(cfg: DataConfig, channels: int, base_dir: Path | None = None) -> DataBundle:
    if not cfg.path:
        raise UserError("the folder data set needs a path (a folder with train/<class>/ images)", None, "data.path")
    root = Path(cfg.path).expanduser()
    if not root.is_absolute() and base_dir is not None:
        root = Path(base_dir) / root
    if not root.is_dir():
        raise UserError("folder not found", root, "data.path")
    tf = make_transform(channels, cfg.resolution)
    train_all = _image_folder(root / "train", tf, channels)
    classes = class_names(train_all)
    val_dir = root / "val"
    val: Dataset
    if val_dir.exists():
        val = _image_folder(val_dir, tf, channels)
        val_classes = class_names(val)
        if val_classes != classes:
            extra = sorted(set(val_classes) - set(classes))
            missing = sorted(set(classes) - set(val_classes))
            what = (f"classes not in train: {extra[:5]}" if extra else f"missing train classes: {missing[:5]}")
            raise UserError(f"val classes differ from train ({what})", val_dir, "data.path")
        train: Dataset = train_all
        calib_idx = np.sort(np.random.default_rng(0).permutation(len(train_all))[: min(cfg.calib_images,
                                                                                       len(train_all))])
    else:
        if len(train_all) < 2:
            raise UserError("need at least 2 images to split off a validation set", root / "train", "data.path")
        tr, va, calib_idx = fixed_split(len(train_all), cfg.val_fraction, cfg.calib_images)
        train, val = Subset(train_all, tr.tolist()), Subset(train_all, va.tolist())
    calib = Subset(train_all, calib_idx.tolist())
    return DataBundle(train, val, calib, len(classes), channels, cfg.resolution, cfg.loader_workers)
