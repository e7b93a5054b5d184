"""Where networks run: the experiment's ``device`` field and ``train.precision``.

``device``: ``auto`` (CUDA when this process sees a GPU, else the CPU), ``cpu``,
``cuda`` or ``cuda:N``. Asking for CUDA where there is none is a one-line error
(exit 2), never a silent fall-back to the CPU.

``precision``: ``fp32``, ``bf16`` or ``fp16``, applied through ``torch.autocast``
(weights and checkpoints stay fp32; fp16 adds a gradient scaler in the training
engine). :func:`autocast` is the one context every stage that runs a network uses.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, ContextManager

import torch

from .errors import UserError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_device_spec(spec: str) -> str:
    """``spec`` if it is a device spelling (for schema validators), else ValueError."""
    if not re.match(DEVICE_PATTERN, spec):
        raise ValueError(f"unknown device {spec!r} (expected auto, cpu, cuda or cuda:N)")
    return spec


def resolve_device(spec: str = "auto", file: Any = None, field: str = "device") -> torch.device:
    """The torch device for ``spec``; a one-line UserError when CUDA is asked for and
    missing (or the index is out of range)."""
    spec = (spec or "auto").strip()
    try:
        check_device_spec(spec)
    except ValueError as e:
        raise UserError(str(e), file, field) from None
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"device {spec!r} asked for, but this machine has no CUDA device (torch "
                        f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use device: cpu or auto",
                        file, field)
    dev = torch.device(spec)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) are visible",
                        file, field)
    return dev


def check_precision(precision: str, device: torch.device, file: Any = None,
                    field: str = "train.precision") -> None:
    """A one-line UserError when ``device`` cannot run ``precision`` under autocast."""
    if precision == "fp32":
        return
    if precision not in DTYPES:
        raise UserError(f"unknown precision {precision!r} (expected {', '.join(PRECISIONS)})", file, field)
    if not torch.amp.is_autocast_available(device.type):
        raise UserError(f"{precision} needs torch.autocast on {device.type}, which this torch lacks", file, field)
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16 or fp32",
                        file, field)
    try:  # e.g. an older torch whose CPU autocast lacks fp16
        with torch.autocast(device.type, dtype=DTYPES[precision]):
            torch.nn.functional.linear(torch.ones(1, 2, device=device), torch.ones(2, 2, device=device))
    except (RuntimeError, TypeError, ValueError) as e:
        raise UserError(f"{precision} autocast is not supported on {device.type} here ({e})", file, field) from None


def autocast(device: torch.device, precision: str = "fp32") -> ContextManager[Any]:
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def is_conv_net(model: torch.nn.Module) -> bool:
    """True when convolutions hold more weights than linear layers (channels_last pays
    off for those; a ViT with a conv stem keeps the default layout)."""
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return conv > linear
