"""Static network -> ONNX bytes, checked with onnx.checker and against torch with ONNX
Runtime. Below every stage: profiling (hw), lut measurement (predict) and export all
convert subnets with it."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

DEFAULT_OPSET = 18


@dataclass
class OnnxResult:
    data: bytes
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    max_abs_diff: float | None = None


INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _export(model: nn.Module, example: torch.Tensor, opset: int, dynamo: bool, dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs: dict = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset,
                        "dynamo": dynamo}
        if dynamo:
            kwargs["external_data"] = False
            kwargs["verbose"] = False
            if dynamic_batch:
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        elif dynamic_batch:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        torch.onnx.export(model, (example,), buf, **kwargs)
    return buf.getvalue()


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int = DEFAULT_OPSET,
            dynamo: bool = False, dynamic_batch: bool = False) -> OnnxResult:
    """Export ``model`` (eval mode) for ``input_shape`` (with ``dynamic_batch``, the first
    axis is a symbolic ``batch``) and validate it with ``onnx.checker``. The TorchScript
    exporter is the default because it is several times faster for these small CNNs; the
    other exporter is the fallback on failure. Input ``input``, output ``logits``."""
    import onnx

    model = model.eval()
    example = torch.zeros(input_shape)
    if dynamic_batch and input_shape[0] == 1:
        example = torch.zeros((2, *input_shape[1:]))  # a batch of 1 can be specialised away
    errors = []
    for use_dynamo in (dynamo, not dynamo):
        try:
            data = _export(model, example, opset, use_dynamo, dynamic_batch)
            onnx.checker.check_model(onnx.load_from_string(data))
            return OnnxResult(data, "dynamo" if use_dynamo else "torchscript", opset)
        except Exception as e:  # noqa: BLE001 - we retry with the other exporter
            errors.append(f"{'dynamo' if use_dynamo else 'torchscript'}: {type(e).__name__}: {e}")
    raise RuntimeError("ONNX export failed with both exporters: " + " | ".join(errors))


def ort_session(data: bytes, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def verify(model: nn.Module, data: bytes, x: torch.Tensor, rtol: float = 1e-3, atol: float = 1e-5) -> float:
    """Run torch and onnxruntime on ``x``; raise if they differ beyond tolerance.
    Returns the max absolute difference."""
    want = model.eval()(x).numpy()
    sess = ort_session(data)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy().astype(np.float32)})[0]
    diff = float(np.abs(got - want).max())
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        raise AssertionError(f"onnxruntime output differs from torch: max abs diff {diff:.3g}")
    return diff
