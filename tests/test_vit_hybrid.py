"""Family vit_hybrid (ElasticViT): space validation, analytic costs vs measured,
vectorised MACs, extraction and ONNX equality on 20 random archs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from nasplat.errors import UserError
from nasplat.export import to_onnx, verify
from nasplat.space import load_space
from nasplat.supernet import build_supernet

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
SMALL = SPACES / "elasticvit_small.yaml"


@pytest.fixture(scope="module")
def small():
    return load_space(SMALL)


@pytest.fixture(scope="module")
def supernet(small):
    torch.manual_seed(0)
    net = build_supernet(small)
    with torch.no_grad():  # non-trivial BN / LN statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def archs20(space):
    rng = np.random.default_rng(2024)
    return [space.max_arch(), space.min_arch()] + [space.sample(rng) for _ in range(18)]


def measured_macs(model, x) -> int:
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model(x)
    return fc.get_total_flops() // 2


def test_shipped_spaces_describe():
    paper = load_space(SPACES / "elasticvit.yaml")
    d = paper.describe()
    # the paper's space spans tens of MFLOPs to a few GFLOPs
    assert 20e6 < d["macs_min"] < 60e6 and 2e9 < d["macs_max"] < 4e9
    names = [p.name for p in paper.params]
    assert names[:3] == ["r", "sw", "sd"] and {"k0", "e1", "m2", "v5", "w5", "d5"} <= set(names)
    assert paper.param("w4").choices == tuple(range(144, 289, 16))
    assert paper.param("d0").choices == (2, 3, 4, 5) and paper.param("d3").choices == (1, 2, 3, 4, 5, 6)
    assert paper.count() == np.prod([len(p.choices) for p in paper.params])


def test_extract_equals_supernet_and_costs_are_exact(small, supernet):
    for arch in archs20(small):
        r = small.resolution(arch)
        x = torch.randn(2, 3, r, r)
        supernet.set_active(arch)
        static = supernet.extract(arch).eval()
        with torch.no_grad():
            diff = float((supernet(x) - static(x)).abs().max())
        assert diff <= 1e-5, (arch.id, diff)
        assert measured_macs(static, x[:1]) == small.macs(arch), arch.id
        assert sum(p.numel() for p in static.parameters()) == small.num_params(arch), arch.id
        assert sum(m for m, _ in small.stage_costs(arch)) == small.macs(arch)


def test_train_mode_forward_matches_and_only_active_weights_get_gradients(small, supernet):
    arch = small.min_arch()
    supernet.train()
    try:
        supernet.set_active(arch)
        x = torch.randn(4, 3, 24, 24)
        static = supernet.extract(arch).train()
        torch.manual_seed(1)  # the same dropout mask in the head
        out = supernet(x)
        torch.manual_seed(1)
        assert torch.allclose(out, static(x), atol=1e-5)
        supernet.zero_grad(set_to_none=True)
        out.sum().backward()
        att = supernet.stages[2].blocks[0].attn  # width 32 of 48 -> 2 of 3 heads, v 2*16 of 4*16
        g = att.v_weight.grad
        assert g[:2, :32, :32].abs().sum() > 0 and g[2:].abs().sum() == 0 and g[:, 32:].abs().sum() == 0
        assert supernet.stages[2].blocks[1].attn.v_weight.grad is None  # depth 1 of 2
    finally:
        supernet.zero_grad(set_to_none=True)
        supernet.eval()


def test_onnx_export_matches_torch_on_20_archs(small, supernet):
    exporters = set()
    for arch in archs20(small):
        r = small.resolution(arch)
        static = supernet.extract(arch).eval()
        res = to_onnx(static, (1, 3, r, r))
        exporters.add(res.exporter)
        diff = verify(static, res.data, torch.randn(1, 3, r, r), rtol=1e-3, atol=1e-5)
        assert diff <= 1e-4
    assert exporters


def test_paper_space_costs_exact():
    """The ImageNet-scale space: analytic MACs/params against the measured static net
    (a supernet of the paper's space is 34M parameters: build it once, check 2 archs)."""
    paper = load_space(SPACES / "elasticvit.yaml")
    torch.manual_seed(0)
    net = build_supernet(paper).eval()
    rng = np.random.default_rng(5)
    arch = paper.sample(rng).replace(r=128)
    for a in (paper.min_arch(), paper.arch(arch)):
        static = net.extract(a)
        r = paper.resolution(a)
        assert measured_macs(static, torch.randn(1, 3, r, r)) == paper.macs(a)
        assert sum(p.numel() for p in static.parameters()) == paper.num_params(a)


def test_vectorised_macs_equal_per_arch_and_are_fast(small):
    import time

    paper = load_space(SPACES / "elasticvit.yaml")
    for space in (small, paper):
        rng = np.random.default_rng(1)
        codes = np.stack([rng.integers(len(p.choices), size=300) for p in space.params], 1)
        batch = space.macs_batch(codes)
        params = space.params_batch(codes)
        for i in range(0, 300, 10):
            a = space.decode(codes[i])
            assert batch[i] == space.macs(a) and params[i] == space.num_params(a)
    codes = np.stack([rng.integers(len(p.choices), size=20000) for p in paper.params], 1)
    t = time.perf_counter()
    paper.macs_batch(codes)
    rate = 20000 / (time.perf_counter() - t)
    assert rate > 2000, rate  # thousands per second, with a wide margin for a loaded machine


def test_transformer_width_not_divisible_by_head_dim(tmp_path):
    data = yaml.safe_load(SMALL.read_text())
    data["stages"][3]["widths"] = [48, 56]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as e:
        load_space(p)
    assert e.value.field == "stages.3.widths" and "head_dim" in e.value.message and e.value.file == str(p)


def test_conv_stage_after_transformer_and_unknown_keys(tmp_path):
    data = yaml.safe_load(SMALL.read_text())
    data["stages"].append({"type": "conv", "widths": [96], "depths": [1], "stride": 1})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as e:
        load_space(p)
    assert e.value.field == "stages.6.type"

    data = yaml.safe_load(SMALL.read_text())
    data["stages"][2]["kernels"] = [3, 5]  # a conv option on a transformer stage
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as e:
        load_space(p)
    assert e.value.field.startswith("stages.2") and e.value.field.endswith("kernels") and "unknown" in e.value.message

    data = yaml.safe_load(SMALL.read_text())
    data["stages"][0]["kernels"] = [3, 4]
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="odd") as e:
        load_space(p)
    assert "kernels" in e.value.field
