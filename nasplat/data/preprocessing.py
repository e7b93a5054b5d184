"""What a deployed model must do to a raw image before the network sees it: the exact
evaluation preprocessing of each data set, as plain data for an export manifest.

A device team reproduces it with numpy alone (``nasplat/export/preprocess.py``, which is
copied next to the exported ONNX files). Steps act on a float32 NCHW batch, in order:

``{"op": "divide", "by": d}``
    ``x / d`` (the raw integer pixels, converted to float32 first).
``{"op": "grayscale", "weights": [wr, wg, wb]}``
    ``Σ_c w_c · x_c`` over the 3 colour planes, keeping a 1-plane axis.
``{"op": "resize", "size": [h, w], "mode": "bilinear", "align_corners": false, "antialias": false}``
    torch's ``F.interpolate`` semantics (half-pixel centres, edge clamped, no antialias).
``{"op": "normalize", "mean": [...], "std": [...]}``
    ``(x - mean_c) / std_c`` per channel.
``{"op": "repeat_channels", "channels": C}``
    repeat a 1-plane image C times.

Folder data sets (images on disk) start with PIL steps (``decode``, ``resize_shorter``,
``center_crop``) that a device team must run with PIL, as timm's eval transform does.
Augmentation never appears here: it is applied to training batches only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..registry import Registry
from ._base import DataBundle, DataConfig

Preprocessing = dict[str, Any]


@dataclass(frozen=True)
class DataPreprocessing:
    """How one data set's images reach the network: ``describe(cfg, channels, base_dir)``
    gives the manifest's ``raw`` / ``steps`` / ``labels``; ``raw_val(bundle, cfg)`` the
    val split's raw images (uint8 NCHW, or file paths) and labels, in the split's order."""

    describe: Callable[[DataConfig, int, "Path | None"], Preprocessing]
    raw_val: Callable[[DataBundle, DataConfig], tuple[Any, np.ndarray]]


PREPROCESSING: Registry[DataPreprocessing] = Registry("preprocessing")


def resize_step(size: int) -> dict[str, Any]:
    """The bilinear resize every stage applies (``nasplat.supernet.resize``)."""
    return {"op": "resize", "size": [size, size], "mode": "bilinear", "align_corners": False, "antialias": False}


def _tail(channels: int, planes: int, mean: list[float], std: list[float]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"op": "normalize", "mean": mean, "std": std}]
    if planes != channels:
        steps.append({"op": "repeat_channels", "channels": channels})
    return steps


def _digits_raw_val(bundle: DataBundle, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    from ._base import fixed_split

    d = load_digits()
    _, val, _ = fixed_split(len(d.target), cfg.val_fraction, cfg.calib_images)
    return d.images[val].astype(np.uint8)[:, None], d.target[val].astype(np.int64)


def _digits(cfg: DataConfig, channels: int, base_dir: Path | None = None) -> Preprocessing:
    from .digits import MEAN, STD

    steps = [{"op": "divide", "by": 16.0}]
    if cfg.resolution != 8:
        steps.append(resize_step(cfg.resolution))
    return {"raw": {"what": "scikit-learn's digits: 8x8 grayscale, integer values 0..16",
                    "dtype": "uint8", "layout": "NCHW", "channels": 1, "size": [8, 8], "value_range": [0, 16]},
            "steps": steps + _tail(channels, 1, [MEAN], [STD]),
            "labels": [str(i) for i in range(10)]}


def _cifar10_raw_val(bundle: DataBundle, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    val = bundle.val
    return val.x.raw.numpy(), val.y.numpy()  # type: ignore[attr-defined]


def _cifar10(cfg: DataConfig, channels: int, base_dir: Path | None = None) -> Preprocessing:
    from .cifar10 import GRAY, GRAY_MEAN, GRAY_STD, MEAN, STD

    steps: list[dict[str, Any]] = [{"op": "divide", "by": 255.0}]
    if channels != 3:
        steps.append({"op": "grayscale", "weights": list(GRAY)})
    if cfg.resolution != 32:
        steps.append(resize_step(cfg.resolution))
    mean, std = (list(MEAN), list(STD)) if channels == 3 else ([GRAY_MEAN], [GRAY_STD])
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return {"raw": {"what": "CIFAR-10 images: 32x32 RGB, uint8 0..255 (R, G, B planes)", "dtype": "uint8",
                    "layout": "NCHW", "channels": 3, "size": [32, 32], "value_range": [0, 255]},
            "steps": steps + _tail(channels, 3 if channels == 3 else 1, mean, std), "labels": labels}


def _folder_raw_val(bundle: DataBundle, cfg: DataConfig) -> tuple[list[str], np.ndarray]:
    from torch.utils.data import Subset

    val = bundle.val
    samples = [val.dataset.samples[i] for i in val.indices] if isinstance(val, Subset) else val.samples  # type: ignore
    return [p for p, _ in samples], np.array([t for _, t in samples], dtype=np.int64)


def _folder(cfg: DataConfig, channels: int, base_dir: Path | None = None) -> Preprocessing:
    from timm.data.readers.reader_image_folder import natural_key

    from .folder import IMAGENET_MEAN, IMAGENET_STD

    rgb = channels == 3
    mean = list(IMAGENET_MEAN) if rgb else [sum(IMAGENET_MEAN) / 3]
    std = list(IMAGENET_STD) if rgb else [sum(IMAGENET_STD) / 3]
    root = Path(cfg.path or ".").expanduser()
    if not root.is_absolute() and base_dir is not None:
        root = Path(base_dir) / root
    train = root / "train"
    labels = sorted((p.name for p in train.iterdir() if p.is_dir()), key=natural_key) if train.is_dir() else []
    return {"raw": {"what": "an image file (any format PIL reads)", "dtype": "uint8", "layout": "HWC",
                    "channels": 3 if rgb else 1},
            "steps": [{"op": "decode", "mode": "RGB" if rgb else "L", "library": "PIL"},
                      {"op": "resize_shorter", "size": cfg.resolution, "interpolation": "bilinear", "library": "PIL"},
                      {"op": "center_crop", "size": cfg.resolution},
                      {"op": "to_nchw"},
                      {"op": "divide", "by": 255.0}] + _tail(channels, 3 if rgb else 1, mean, std),
            "labels": labels}


PREPROCESSING.register("digits")(DataPreprocessing(_digits, _digits_raw_val))
PREPROCESSING.register("cifar10")(DataPreprocessing(_cifar10, _cifar10_raw_val))
PREPROCESSING.register("folder")(DataPreprocessing(_folder, _folder_raw_val))


def preprocessing(cfg: DataConfig, channels: int, base_dir: Path | None = None) -> Preprocessing:
    """The evaluation preprocessing of the data set ``cfg`` names, for ``channels`` input
    planes, up to the stored resolution ``data.resolution``."""
    return PREPROCESSING.get(cfg.name, None, "data.name").describe(cfg, channels, base_dir)


def raw_val(bundle: DataBundle, cfg: DataConfig) -> tuple[Any, np.ndarray]:
    """The val split as raw images (what ``preprocessing`` starts from) and labels."""
    return PREPROCESSING.get(cfg.name, None, "data.name").raw_val(bundle, cfg)
