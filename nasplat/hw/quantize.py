"""Static INT8 quantisation of an exported model with ``onnxruntime.quantization``,
calibrated on real images (the experiment's calibration split, resized to the arch's
resolution). QDQ format, per-channel int8 weights, uint8 activations by default.

Latency does not depend on the calibration ranges, only accuracy does; the profile
stage always calibrates on the experiment's real data.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .profile import Quantization


class _Reader:
    """``CalibrationDataReader`` over a fixed array, batch by batch."""

    def __init__(self, name: str, images: np.ndarray, batch: int):
        self.name, self.images, self.batch, self.pos = name, images, batch, 0

    def get_next(self):
        if self.pos + self.batch > len(self.images):
            return None
        x = self.images[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return {self.name: np.ascontiguousarray(x, dtype=np.float32)}

    def rewind(self) -> None:
        self.pos = 0


def quantize_int8(data: bytes, calib: np.ndarray, q: Quantization | None = None) -> bytes:
    """fp32 ONNX bytes -> statically quantised INT8 ONNX bytes.

    ``calib``: float32 images (N, C, H, W) at the model's input size, N >= the model's
    batch size; the model is calibrated with ``N // batch`` batches."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization import CalibrationDataReader

    q = q or Quantization()
    model = onnx.load_from_string(data)
    inp = model.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    batch = dims[0] if dims and dims[0] > 0 else 1
    calib = np.asarray(calib, dtype=np.float32)
    if calib.ndim != 4 or list(calib.shape[1:]) != dims[1:]:
        raise ValueError(f"calibration images have shape {calib.shape[1:]}, the model wants {dims[1:]}")
    if len(calib) < batch:
        calib = np.concatenate([calib] * (batch // max(1, len(calib)) + 1))[:batch]
    # Calibrate in one batch: a copy of the model with a symbolic batch dimension runs all
    # calibration images at once (the per-image loop dominated quantisation time); the
    # quantised graph gets the fixed batch back afterwards.
    dyn = _with_batch(model, None)
    data = dyn.SerializeToString()
    reader = _Reader(inp.name, calib, len(calib) if dyn is not model else batch)
    CalibrationDataReader.register(_Reader)
    qt = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    with tempfile.TemporaryDirectory(prefix="nasplat-int8-") as tmp:
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(data)
        try:  # shape inference + constant folding helps the quantiser; optional
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation only
            pre = src
        quantize_static(
            str(pre), str(out), reader,
            quant_format=QuantFormat.QDQ if q.format == "qdq" else QuantFormat.QOperator,
            per_channel=q.per_channel,
            activation_type=qt[q.activation_type], weight_type=qt[q.weight_type],
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[q.method],
        )
        qmodel = onnx.load(str(out))
        if dyn is model:
            return qmodel.SerializeToString()
        symbolic = not (dims and dims[0] > 0)  # a model exported with a dynamic batch axis keeps it
        return _with_batch(qmodel, None if symbolic else batch).SerializeToString()


def _with_batch(model, batch: int | None):
    """A copy of ``model`` whose graph input/output batch dimension is ``batch``
    (``None``: symbolic). Returns ``model`` itself when the graph has more than one
    input or output (left untouched)."""
    import onnx

    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in (m.graph.input[0], m.graph.output[0]):
        d = v.type.tensor_type.shape.dim[0]
        if batch is None:
            d.dim_param = "N"
        else:
            d.dim_value = batch
    del m.graph.value_info[:]  # stale intermediate shapes; re-inferred by the runtime
    return m
