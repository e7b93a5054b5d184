"""ONNX export of extracted subnets: the file passes ``onnx.checker`` and onnxruntime
gives torch's outputs (rtol 1e-3, atol 1e-5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from nasplat.export import ort_session, to_onnx, verify
from nasplat.space import load_space
from nasplat.supernet import build_supernet

from test_supernet import perturb

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
N_ARCHS = 20


@pytest.fixture(scope="module")
def supernet():
    sp = load_space(SPACES / "ofa_mbv3_small.yaml")
    torch.manual_seed(0)
    net = build_supernet(sp)
    perturb(net, 5)  # non-trivial BN statistics, biases and kernel transforms
    return net.eval()


@pytest.fixture(autouse=True)
def one_thread():
    """Batch-2 forwards of small nets: one thread does not spin on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_onnx_matches_torch_for_random_archs(supernet):
    sp = supernet.space
    rng = np.random.default_rng(20)
    archs = [sp.min_arch(), sp.max_arch()] + [sp.sample(rng) for _ in range(N_ARCHS - 2)]
    g = torch.Generator().manual_seed(0)
    sizes = set()
    for arch in archs:
        static = supernet.extract(arch).eval()
        r = sp.resolution(arch)
        res = to_onnx(static, (2, 3, r, r))
        model = onnx.load_from_string(res.data)
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == ["input"]
        assert [o.name for o in model.graph.output] == ["logits"]
        x = torch.randn(2, 3, r, r, generator=g)
        with torch.no_grad():
            want = static(x).numpy()
        sess = ort_session(res.data)
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == (2, sp.config.num_classes)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
        assert verify(static, res.data, x) <= 1e-4
        sizes.add(len(res.data))
    assert len(sizes) > N_ARCHS // 2  # the exported graphs really differ per arch


def test_verify_catches_a_mismatch(supernet):
    """``verify`` is what export relies on: it must fail when the ONNX file is not the model."""
    sp = supernet.space
    a, b = sp.min_arch(), sp.max_arch().replace(r=sp.resolution(sp.min_arch()))
    r = sp.resolution(a)
    onnx_a = to_onnx(supernet.extract(a), (1, 3, r, r)).data
    x = torch.randn(1, 3, r, r)
    assert verify(supernet.extract(a), onnx_a, x) <= 1e-5
    with pytest.raises(AssertionError, match="differs"):
        verify(supernet.extract(b), onnx_a, x)
