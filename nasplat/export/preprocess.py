"""Apply an export manifest's preprocessing with numpy alone (no torch, no nasplat).

nasplat copies this file next to the exported ONNX files (``export/preprocess.py``), so a
device team can run a subnet with ONNX Runtime and numpy::

    import json, numpy as np, onnxruntime as ort
    from preprocess import preprocess

    manifest = json.load(open("export/manifest.json"))
    entry = manifest["subnets"][0]
    session = ort.InferenceSession("export/" + entry["file"])
    x = preprocess(raw_images, entry["preprocessing"])   # raw: as manifest["preprocessing"]["raw"]
    logits = session.run(None, {entry["input"]["name"]: x})[0]
    labels = [manifest["preprocessing"]["labels"][i] for i in logits.argmax(1)]

``raw_images`` for in-memory data sets is a uint8 array (N, C, H, W); for folder data
sets a list of image file paths (decoded with PIL, as timm's evaluation transform).
Each step is described in ``nasplat/data/preprocessing.py``; the bilinear resize follows
torch's ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres,
edge clamped, no antialias).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

FLOAT = np.float32


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    scale = FLOAT(n_in / n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=FLOAT) + FLOAT(0.5)) - FLOAT(0.5), FLOAT(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0.astype(FLOAT)).astype(FLOAT)
    return i0, i1, (FLOAT(1) - w1).astype(FLOAT), w1


def resize_bilinear(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of a float32 (N, C, H, W) batch to ``size`` = (h, w)."""
    h, w = int(size[0]), int(size[1])
    if x.shape[2:] == (h, w):
        return x
    i0, i1, a0, a1 = _linear_taps(x.shape[2], h)
    j0, j1, b0, b1 = _linear_taps(x.shape[3], w)
    rows = x[:, :, i0, :] * a0[:, None] + x[:, :, i1, :] * a1[:, None]
    return (rows[:, :, :, j0] * b0 + rows[:, :, :, j1] * b1).astype(FLOAT)


def _decode(paths: Sequence[str], steps: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The PIL steps of folder data sets (decode, resize_shorter, center_crop, to_nchw)."""
    from PIL import Image

    spec = {s["op"]: s for s in steps if s["op"] in ("decode", "resize_shorter", "center_crop")}
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert(spec["decode"]["mode"])
            size = spec["resize_shorter"]["size"]
            w, h = im.size
            nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
            im = im.resize((nw, nh), Image.BILINEAR)
            c = spec["center_crop"]["size"]
            left, top = int(round((nw - c) / 2.0)), int(round((nh - c) / 2.0))
            a = np.asarray(im.crop((left, top, left + c, top + c)), dtype=np.uint8)
        out.append(a[:, :, None] if a.ndim == 2 else a)
    x = np.stack(out).transpose(0, 3, 1, 2)  # to_nchw
    rest = [s for s in steps if s["op"] not in ("decode", "resize_shorter", "center_crop", "to_nchw")]
    return x, rest


def preprocess(raw: Any, steps: list[dict[str, Any]]) -> np.ndarray:
    """Raw images -> the float32 NCHW batch the ONNX model takes (see module docstring)."""
    if steps and steps[0]["op"] == "decode":
        raw, steps = _decode(raw, steps)
    x = np.asarray(raw).astype(FLOAT)
    for s in steps:
        op = s["op"]
        if op == "divide":
            x = x / FLOAT(s["by"])
        elif op == "grayscale":
            x = (x * np.asarray(s["weights"], dtype=FLOAT)[None, :, None, None]).sum(1, keepdims=True)
        elif op == "resize":
            x = resize_bilinear(x, s["size"])
        elif op == "normalize":
            mean = np.asarray(s["mean"], dtype=FLOAT)[None, :, None, None]
            std = np.asarray(s["std"], dtype=FLOAT)[None, :, None, None]
            x = (x - mean) / std
        elif op == "repeat_channels":
            x = np.repeat(x, int(s["channels"]), axis=1)
        else:
            raise ValueError(f"unknown preprocessing step {op!r}")
        x = x.astype(FLOAT)
    return np.ascontiguousarray(x)
