"""CIFAR-10 from the standard distribution folders, read safely.

``data.path`` may name the batches folder itself or its parent. Two layouts:

* ``cifar-10-batches-bin`` (preferred): ``data_batch_1..5.bin`` and ``test_batch.bin``,
  each a sequence of 3073-byte records (1 label byte, then 3072 bytes: the R, G and B
  32x32 planes). Read with ``numpy.fromfile``; nothing is executed.
* ``cifar-10-batches-py``: ``data_batch_1..5`` and ``test_batch``, Python-2 pickles of a
  dict with ``data`` (uint8 array, N x 3072) and ``labels``. Never unpickled freely:
  :class:`RestrictedUnpickler` resolves only the three globals that numpy array
  reconstruction needs (``_reconstruct``, ``ndarray``, ``dtype``) and refuses every other
  global, so a crafted file cannot run code; the result is then checked for the
  expected structure.

Splits: train = the five training batches, val = the test batch, calib = a fixed
subset (seed 0) of train. Images stay in memory as uint8 (150 MB for all 60 000) and
are converted per batch: scaled to [0, 1], converted to grayscale if the space wants
one channel (repeated if it wants another count than 1 or 3), resized to
``data.resolution`` if that is not 32, normalised with the CIFAR-10 mean/std.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ._base import DATASETS, DataBundle, DataConfig, TensorData

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
FOLDERS = ("cifar-10-batches-bin", "cifar-10-batches-py")
RECORD = 1 + 3 * 32 * 32
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights
GRAY_MEAN = sum(w * m for w, m in zip(GRAY, MEAN))
GRAY_STD = 0.2390  # approximate std of the luma of CIFAR-10 images


# -- the restricted unpickler ---------------------------------------------------------
def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x pickles
        allowed[(mod, "_reconstruct")] = _reconstruct
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Admits numpy array reconstruction and nothing else (no other global resolves)."""

    ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}") from None


def restricted_load(data: bytes) -> Any:
    """Unpickle ``data`` (a Python-2 pickle: byte strings stay bytes) through
    :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


# -- readers --------------------------------------------------------------------------
def _read_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise UserError(f"not a CIFAR-10 binary batch: {raw.size} bytes is not a positive multiple of "
                        f"{RECORD}", path, "data.path")
    raw = raw.reshape(-1, RECORD)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def _read_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        obj = restricted_load(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any failure of an untrusted file is the user's
        raise UserError(f"not a readable CIFAR-10 python batch ({type(e).__name__}: {e})", path,
                        "data.path") from None
    if not isinstance(obj, dict):
        raise UserError(f"expected a dict, got {type(obj).__name__}", path, "data.path")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError("'data' must be a uint8 array of shape (N, 3072)", path, "data.path")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        raise UserError(f"'labels' must be a list of {len(data)} class indices", path, "data.path")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise UserError("'labels' must be integers", path, "data.path") from None
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), y


def find_folder(root: Path) -> tuple[Path, str]:
    """(batches folder, "bin" | "py") for ``data.path`` = the folder or its parent."""
    candidates = [root] + [root / f for f in FOLDERS]
    for folder in candidates:
        if (folder / "data_batch_1.bin").is_file():
            return folder, "bin"
    for folder in candidates:
        if (folder / "data_batch_1").is_file():
            return folder, "py"
    raise UserError(f"no CIFAR-10 batches found (expected {FOLDERS[0]}/data_batch_1.bin or "
                    f"{FOLDERS[1]}/data_batch_1 in or under it)", root, "data.path")


def read_cifar10(root: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images, labels), (test images, labels)); images uint8 (N, 3, 32, 32)."""
    folder, kind = find_folder(root)
    suffix, reader = (".bin", _read_bin) if kind == "bin" else ("", _read_pickle)
    parts = []
    for name in TRAIN_BATCHES + [TEST_BATCH]:
        path = folder / (name + suffix)
        if not path.is_file():
            raise UserError("missing CIFAR-10 batch file", path, "data.path")
        x, y = reader(path)
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise UserError(f"labels must lie in 0..9, found {int(y.min())}..{int(y.max())}", path, "data.path")
        parts.append((x, y))
    train = (np.concatenate([p[0] for p in parts[:-1]]), np.concatenate([p[1] for p in parts[:-1]]))
    return train, parts[-1]


# -- tensors converted per batch ------------------------------------------------------
class CifarImages:
    """uint8 CIFAR images that index like a float tensor: ``images[idx]`` returns the
    normalised (len(idx), channels, resolution, resolution) batch."""

    def __init__(self, raw: torch.Tensor, channels: int, resolution: int):
        self.raw, self.channels, self.resolution = raw, channels, resolution
        if channels == 3:
            self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
            self.std = torch.tensor(STD).view(1, 3, 1, 1)
        else:
            self.mean = torch.tensor(GRAY_MEAN).view(1, 1, 1, 1)
            self.std = torch.tensor(GRAY_STD).view(1, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.raw), self.channels, self.resolution, self.resolution)

    def convert(self, raw: torch.Tensor) -> torch.Tensor:
        x = raw.float().div_(255.0)
        if self.channels != 3:
            x = (x * torch.tensor(GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if self.resolution != x.shape[-1]:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        if x.shape[1] != self.channels:  # neither 1 nor 3: repeat the grayscale plane
            x = x.repeat(1, self.channels, 1, 1)
        return x.contiguous()

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, (int, np.integer)):
            return self.convert(self.raw[int(idx)].unsqueeze(0))[0]
        return self.convert(self.raw[idx])


def _tensors(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None, channels: int, res: int) -> TensorData:
    if idx is not None:
        x, y = x[idx], y[idx]
    return TensorData(CifarImages(torch.from_numpy(np.ascontiguousarray(x)), channels, res),  # type: ignore[arg-type]
                      torch.from_numpy(np.ascontiguousarray(y)))


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig, channels: int, base_dir: Path | None = None) -> DataBundle:
    if not cfg.path:
        raise UserError("the cifar10 data set needs a path (the cifar-10-batches-bin or -py folder)",
                        None, "data.path")
    root = Path(cfg.path).expanduser()
    if not root.is_absolute() and base_dir is not None:
        root = Path(base_dir) / root
    if not root.is_dir():
        raise UserError("folder not found", root, "data.path")
    (xt, yt), (xv, yv) = read_cifar10(root)
    calib = np.sort(np.random.default_rng(0).permutation(len(yt))[: min(cfg.calib_images, len(yt))])
    mean, std = (MEAN, STD) if channels == 3 else ((GRAY_MEAN,) * channels, (GRAY_STD,) * channels)
    return DataBundle(_tensors(xt, yt, None, channels, cfg.resolution), _tensors(xv, yv, None, channels, cfg.resolution),
                      _tensors(xt, yt, calib, channels, cfg.resolution), 10, channels, cfg.resolution,
                      mean=mean, std=std, augment=cfg.augment)
