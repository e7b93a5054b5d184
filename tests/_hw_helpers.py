"""Small shared helpers for the hw / predict tests (tiny models and experiments)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def tiny_onnx(channels: int = 4, size: int = 8, seed: int = 0) -> bytes:
    """A tiny conv + relu + global-pool model built with onnx.helper (no torch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, channels, 1, 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


FAST_PROTOCOL = {"warmup_runs": 2, "warmup_seconds": 0.0, "timed_runs": 12}


def write_experiment(tmp: Path, name: str = "exp", samples: int = 3, hardware=("local-cpu",), extra: str = "") -> Path:
    """A digits experiment on the tiny digits space with a fast measuring protocol."""
    text = f"""name: {name}
seed: 0
output_dir: {tmp / 'runs'}
space: {REPO / 'search_spaces' / 'ofa_mbv3_digits.yaml'}
data: {{name: digits, resolution: 16}}
hardware: [{', '.join(hardware)}]
profile: {{samples: {samples}, chunk: 4, protocol: {{warmup_runs: 2, warmup_seconds: 0.0, timed_runs: 10}}}}
{extra}"""
    p = tmp / f"{name}.yaml"
    p.write_text(text)
    return p
