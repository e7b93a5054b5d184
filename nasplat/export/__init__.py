"""Export: static subnet -> ONNX, verified against torch, with a manifest."""
from .onnx import DEFAULT_OPSET, OnnxResult, ort_session, to_onnx, verify

__all__ = ["DEFAULT_OPSET", "OnnxResult", "ort_session", "to_onnx", "verify"]
