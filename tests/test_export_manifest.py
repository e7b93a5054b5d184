"""Exports a device team can ship: the manifest's preprocessing reproduces the recorded
accuracy in a process that imports only onnxruntime, numpy and json (the README's own
snippet), the batch axis is dynamic (batch 1 and 32 agree with torch), and the fp16 /
INT8 files carry their measured accuracy; ``--check`` records the ONNX Runtime accuracy."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _tiny_space import TINY_SPACE
from nasplat.cli import main
from nasplat.data.preprocessing import raw_val
from nasplat.experiment import load_experiment
from nasplat.export import ort_session

REPO = Path(__file__).resolve().parent.parent


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- snippet: onnx-numpy -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its ONNX Runtime + numpy snippet"
    return m.group(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("ship")
    (root / "exp.yaml").write_text(f"name: ship\nspace:\n{TINY_SPACE}" + textwrap.dedent("""\
        data: {name: digits, resolution: 16, batch_size: 64, calib_images: 300}
        train: {strategy: sandwich, epochs: 3, lr: 0.2}
        export: {arch: max, precisions: [fp32, int8], latency_profile: null}
        """))
    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "exp.yaml"]) == 0
        assert main(["export", "exp.yaml", "--check"]) == 0
    finally:
        os.chdir(cwd)
    exp = load_experiment(root / "runs" / "ship")  # reopened from the run folder
    return exp, root / "runs" / "ship" / "export"


def test_manifest_describes_input_output_and_preprocessing(exported):
    exp, out = exported
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "nasplat-export/1"
    assert m["preprocessing"]["labels"] == [str(i) for i in range(10)]
    assert m["preprocessing"]["raw"]["size"] == [8, 8]
    (e,) = m["subnets"]
    r = exp.space.resolution(exp.space.max_arch())
    assert e["input"] == {"name": "input", "dtype": "float32", "layout": "NCHW", "shape": ["batch", 1, r, r]}
    assert e["output"]["shape"] == ["batch", 10]
    ops = [s["op"] for s in e["preprocessing"]]
    assert ops[0] == "divide" and "normalize" in ops
    assert e["preprocessing"][1]["size"] == [16, 16]  # stored resolution
    assert e["preprocessing"][-1]["size"] == [r, r] and r != 16  # then the subnet's
    assert e["verified_batches"] == [1, 32] and e["max_abs_diff_vs_torch"] < 1e-3
    assert len(e["checkpoint_sha256"]) == 64
    assert e["accuracy"] > 0.5  # trained: the exact-reproduction check below is not on a chance-level net
    # --check re-ran every file from raw images and recorded the same accuracy for fp32
    assert e["variants"]["fp32"]["check_accuracy"] == e["accuracy"]
    assert (out / "preprocess.py").is_file()


def test_int8_file_has_its_own_accuracy(exported):
    _, out = exported
    (e,) = json.loads((out / "manifest.json").read_text())["subnets"]
    v = e["variants"]["int8"]
    assert (out / v["file"]).is_file() and v["file"].endswith(".int8.onnx")
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / v["file"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert abs(v["accuracy"] - e["accuracy"]) < 0.05
    assert v["check_accuracy"] == v["accuracy"]  # the int8 file evaluated from raw images too


def test_batch_axis_is_dynamic(exported):
    exp, out = exported
    (e,) = json.loads((out / "manifest.json").read_text())["subnets"]
    sess = ort_session((out / e["file"]).read_bytes())
    r = e["resolution"]
    x = np.random.default_rng(0).standard_normal((32, 1, r, r)).astype(np.float32)
    big = sess.run(None, {"input": x})[0]
    ones = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(32)])
    assert big.shape == (32, 10)
    np.testing.assert_allclose(big, ones, rtol=1e-4, atol=1e-5)


def test_readme_snippet_reproduces_the_accuracy_without_torch(exported, tmp_path):
    exp, out = exported
    from nasplat.data import load_experiment_data

    raw, labels = raw_val(load_experiment_data(exp), exp.config.data)
    assert raw.dtype == np.uint8 and raw.shape[1:] == (1, 8, 8)
    np.save(tmp_path / "val_images.npy", raw)
    np.save(tmp_path / "val_labels.npy", labels)
    code = readme_snippet().replace("runs/digits_ofa/export", str(out))
    code += textwrap.dedent("""
        assert "torch" not in sys.modules and "nasplat" not in sys.modules, sorted(sys.modules)
        print("RESULT", int((logits.argmax(1) == labels).sum()), len(labels))
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr
    correct, total = map(int, proc.stdout.split("RESULT")[1].split())
    (e,) = json.loads((out / "manifest.json").read_text())["subnets"]
    assert total == len(labels)
    assert correct == round(e["accuracy"] * total)  # exactly the recorded accuracy
