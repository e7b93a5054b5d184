"""Export: static subnet -> ONNX, verified against torch, with a manifest.

Names are imported lazily so that ``nasplat --help`` and the CLI's other commands do
not pay for importing torch and onnx.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_OPSET", "OnnxResult", "ort_session", "to_onnx", "verify"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import onnx as _onnx

        return getattr(_onnx, name)
    raise AttributeError(name)
