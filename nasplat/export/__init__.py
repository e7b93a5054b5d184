"""Export: static subnet -> ONNX, verified against torch, with a manifest.

Names are imported lazily so that ``nasplat --help`` and the CLI's other commands do
not pay for importing torch and onnx.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {"DEFAULT_OPSET": "..onnxio", "OnnxResult": "..onnxio", "ort_session": "..onnxio",
            "to_onnx": "..onnxio", "verify": "..onnxio", "export_archs": ".stage", "parse_arch": ".stage"}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ..onnxio import DEFAULT_OPSET, OnnxResult, ort_session, to_onnx, verify
    from .stage import export_archs, parse_arch
