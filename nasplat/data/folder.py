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
deterministic transform; the training engine's batches use the ``data.augment``
pipeline instead (:func:`nasplat.data.augment.pil_train_transform`), on the same
samples. The calibration images are a fixed subset of train.

Unreadable images: when the data set is opened every image is decoded once
(``data.check_images``, JPEGs at reduced scale, which still reads every byte; a few
minutes for ImageNet on a many-core machine), so a corrupt or truncated file is one
line naming it before any work. An image that fails later (changed on disk) is the
same one-line error from the DataLoader; it is never silently replaced by another
sample, as timm's ``ImageDataset`` does, which would shift per-sample indices.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import UserError
from ..ui import progress_bar
from ._base import DATASETS, DataBundle, DataConfig, fixed_split
from .augment import AugmentConfig, pil_train_transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _RepeatChannels:
    """Repeat a 1-channel image tensor to ``channels`` (spaces with neither 1 nor 3)."""

    def __init__(self, channels: int):
        self.channels = channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(self.channels, 1, 1)


def normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean/std, or their channel average for grayscale decoding."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)


def make_transform(channels: int, resolution: int, augment: AugmentConfig | None = None) -> Any:
    """The eval transform, or with ``augment`` the training one (PIL in, tensor out)."""
    from timm.data import create_transform
    from torchvision import transforms

    mean, std = normalisation(channels)
    if augment is not None and augment.enabled:
        tf = pil_train_transform(augment, channels, resolution, mean, std)
    else:
        tf = create_transform(input_size=(len(mean), resolution, resolution), is_training=False,
                              interpolation="bilinear", mean=mean, std=std, crop_pct=1.0, crop_mode="center")
    if channels not in (1, 3):
        tf = transforms.Compose([tf, _RepeatChannels(channels)])
    return tf


class ImageFiles(Dataset):
    """``(image, target, error)`` per sample of a timm folder reader's file list; a file
    that cannot be decoded yields a zero image and ``"path\\0reason"`` in ``error`` (the
    DataBundle turns it into a one-line error in the main process) instead of timm's
    substitution by the next sample."""

    def __init__(self, samples: list[tuple[str, int]], transform: Any, mode: str, shape: tuple[int, int, int],
                 class_to_idx: dict[str, int]):
        self.samples, self.transform, self.mode, self.shape = samples, transform, mode, shape
        self.class_to_idx = class_to_idx

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        from PIL import Image

        path, target = self.samples[i]
        try:
            with Image.open(path) as img:
                x = self.transform(img.convert(self.mode))
        except (OSError, ValueError, SyntaxError) as e:  # PIL's decode errors
            return torch.zeros(self.shape), int(target), f"{path}\0{e}"
        return x, int(target), ""

    def with_transform(self, transform: Any) -> ImageFiles:
        return ImageFiles(self.samples, transform, self.mode, self.shape, self.class_to_idx)


def _check_image(path: str) -> str | None:
    """None if ``path`` decodes fully, else the reason (JPEGs decoded at 1/8 scale)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as e:  # noqa: BLE001 - any failure to decode is the file's
        return str(e) or type(e).__name__
    return None


def check_images(paths: list[str], workers: int) -> None:
    """Decode every image once; the first bad one (in file order) is a one-line error."""
    n = len(paths)
    with ThreadPoolExecutor(max(1, workers)) as pool, progress_bar("checking images", n, n > 2000) as bar:
        for start in range(0, n, 4096):
            chunk = paths[start:start + 4096]
            for path, reason in zip(chunk, pool.map(_check_image, chunk)):
                if reason is not None:
                    raise UserError(f"cannot read image ({reason})", path, "data.path")
            bar.advance(len(chunk))


def _image_folder(root: Path, transform: Any, channels: int, resolution: int) -> ImageFiles:
    """The images of one split folder (timm's reader lists them), with UserErrors for
    bad layouts."""
    from timm.data.readers.img_extensions import get_img_extensions
    from timm.data.readers.reader_image_folder import ReaderImageFolder

    if not root.is_dir():
        raise UserError("folder not found", root, "data.path")
    exts = get_img_extensions(as_set=True)
    if not any(p.suffix.lower() in exts for p in root.rglob("*") if p.is_file()):
        raise UserError(f"no images found (expected {root.name}/<class>/<image> with one of "
                        f"{', '.join(sorted(exts))})", root, "data.path")
    try:
        reader = ReaderImageFolder(str(root))
    except (RuntimeError, OSError) as e:
        raise UserError(f"cannot read image folder: {e}", root, "data.path") from None
    if "" in reader.class_to_idx:
        loose = next(p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in exts)
        raise UserError(f"image outside a class folder (expected {root.name}/<class>/<image>)", loose, "data.path")
    ds = ImageFiles([(str(p), int(t)) for p, t in reader.samples], transform, "RGB" if channels == 3 else "L",
                    (channels, resolution, resolution), dict(reader.class_to_idx))
    return ds


def class_names(ds: ImageFiles) -> list[str]:
    idx = ds.class_to_idx
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
    train_all = _image_folder(root / "train", tf, channels, cfg.resolution)
    classes = class_names(train_all)
    val_dir = root / "val"
    val: Dataset
    val_files: list[str] = []
    if val_dir.exists():
        val = _image_folder(val_dir, tf, channels, cfg.resolution)
        val_files = [p for p, _ in val.samples]
        val_classes = class_names(val)
        if val_classes != classes:
            extra = sorted(set(val_classes) - set(classes))
            missing = sorted(set(classes) - set(val_classes))
            what = (f"classes not in train: {extra[:5]}" if extra else f"missing train classes: {missing[:5]}")
            raise UserError(f"val classes differ from train ({what})", val_dir, "data.path")
        train: Dataset = train_all
        train_aug: Dataset = train_all.with_transform(make_transform(channels, cfg.resolution, cfg.augment))
        calib_idx = np.sort(np.random.default_rng(0).permutation(len(train_all))[: min(cfg.calib_images,
                                                                                       len(train_all))])
    else:
        if len(train_all) < 2:
            raise UserError("need at least 2 images to split off a validation set", root / "train", "data.path")
        tr, va, calib_idx = fixed_split(len(train_all), cfg.val_fraction, cfg.calib_images)
        train, val = Subset(train_all, tr.tolist()), Subset(train_all, va.tolist())
        train_aug = Subset(train_all.with_transform(make_transform(channels, cfg.resolution, cfg.augment)),
                           tr.tolist())
    if cfg.check_images:
        check_images([p for p, _ in train_all.samples] + val_files, cfg.loader_workers or min(8, os.cpu_count() or 1))
    calib = Subset(train_all, calib_idx.tolist())
    mean, std = normalisation(channels)
    if channels not in (1, 3):
        mean, std = mean * channels, std * channels
    return DataBundle(train, val, calib, len(classes), channels, cfg.resolution, cfg.loader_workers,
                      mean=mean, std=std, augment=cfg.augment, train_augmented=train_aug)
