"""The elastic mbv3 supernet: ``set_active(arch)`` and ``extract(arch)`` compute the same
function (with BN statistics, BN affine, SE biases and the kernel-transform matrices
perturbed away from their identity / zero initialisation so that a wrong slice or a
missing transform would show), the static net has the analytic parameter count, and
BN recalibration's cumulative mode sets the statistics to the cumulative average over the
batches (OFA's default mode is tested in tests/test_ofa.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasplat.space import load_space
from nasplat.supernet import build_supernet, recalibrate_bn
from nasplat.supernet._ops import ElasticConv1x1, ElasticDepthwiseConv

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
MBV3_SPACES = sorted(p.stem for p in SPACES.glob("*.yaml") if yaml.safe_load(p.read_text()).get("family") == "mbv3")
N_ARCHS = 50


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@torch.no_grad()
def perturb(net: nn.Module, seed: int = 0) -> None:
    """Move every BN's statistics and affine parameters, every bias and every
    kernel-transform matrix away from its initial value."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    for m in net.modules():
        if isinstance(m, _BatchNorm):
            rand(m.running_mean, -0.2, 0.2)
            rand(m.running_var, 0.5, 2.0)
            rand(m.weight, 0.5, 1.5)
            rand(m.bias, -0.2, 0.2)
        elif isinstance(m, ElasticDepthwiseConv):
            for t in m.transforms.values():
                t.add_(0.1 * torch.randn(t.shape, generator=g))
        elif isinstance(m, (ElasticConv1x1, nn.Conv2d, nn.Linear)) and m.bias is not None:
            rand(m.bias, -0.2, 0.2)


def space(name: str):
    return load_space(SPACES / f"{name}.yaml")


@pytest.mark.parametrize("name", MBV3_SPACES)
def test_set_active_equals_extract(name, one_thread):
    sp = space(name)
    torch.manual_seed(0)
    net = build_supernet(sp)
    perturb(net)
    net.eval()
    rng = np.random.default_rng(10)
    archs = [sp.min_arch(), sp.max_arch()] + [sp.sample(rng) for _ in range(N_ARCHS)]
    heavy = max(sp.resolutions()) > 64  # the ImageNet space: batch 1 at its smallest resolution
    batch = 1 if heavy else 2
    worst = 0.0
    outputs = []
    for arch in archs:
        r = min(sp.resolutions()) if heavy else sp.resolution(arch)
        x = torch.randn(batch, sp.config.input_channels, r, r, generator=torch.Generator().manual_seed(r))
        static = net.extract(arch)
        assert not static.training  # follows the supernet's mode
        assert sum(p.numel() for p in static.parameters()) == sp.num_params(arch)
        assert not any(isinstance(m, (ElasticConv1x1, ElasticDepthwiseConv)) for m in static.modules())
        with torch.no_grad():
            net.set_active(arch)
            want = net(x)
            got = static(x)
        assert got.shape == (batch, sp.config.num_classes)
        diff = float((want - got).abs().max())
        assert diff <= 1e-5, (arch.to_json(), diff)
        worst = max(worst, diff)
        outputs.append(want)
    # the check is meaningful: different archs give clearly different outputs
    assert float((outputs[0] - outputs[1]).abs().max()) > 1e-2
    # extract leaves the supernet's active arch as it was
    assert net.active_arch == archs[-1]


def test_extract_applies_the_kernel_transforms():
    """OFA's elastic kernel: k=5 is T(7->5) applied to the 7x7 weight's centre 5x5, k=3 is
    T(5->3) applied to the centre 3x3 of that (the matrices act on flattened kernels)."""
    sp = space("ofa_mbv3_digits")
    torch.manual_seed(1)
    net = build_supernet(sp)
    perturb(net, 1)
    a = sp.max_arch()
    a = a.replace(k0_0=5, k0_1=3, e0_1=3)
    block = net.stages[0][1]
    static = net.extract(a)
    dw = block.dw
    c = sp.mid_channels(block.cin, 3)
    w7 = dw.weight[:c].detach()
    w5 = (w7[:, :, 1:6, 1:6].reshape(c, 25) @ dw.transforms["7to5"].detach().T).view(c, 1, 5, 5)
    w3 = (w5[:, :, 1:4, 1:4].reshape(c, 9) @ dw.transforms["5to3"].detach().T).view(c, 1, 3, 3)
    got = static.blocks[1 + 1].dw[0].weight  # blocks = [first block, stage 0 block 0, block 1, ...]
    assert got.shape == (c, 1, 3, 3)
    assert torch.allclose(got, w3, atol=1e-6)
    assert not torch.allclose(got, w7[:, :, 2:5, 2:5], atol=1e-3)  # the transform is not identity
    w5_block0 = net.stages[0][0].dw
    c0 = sp.mid_channels(net.stages[0][0].cin, float(a["e0_0"]))
    want5 = (w5_block0.weight[:c0, :, 1:6, 1:6].detach().reshape(c0, 25)
             @ w5_block0.transforms["7to5"].detach().T).view(c0, 1, 5, 5)
    assert torch.allclose(static.blocks[1].dw[0].weight, want5, atol=1e-6)
    # the transforms are learnable parameters of the supernet, initialised to identity
    fresh = build_supernet(sp)
    names = [n for n, _ in fresh.named_parameters() if "transforms" in n]
    assert names and all(torch.equal(p, torch.eye(p.shape[0])) for n, p in fresh.named_parameters()
                         if "transforms" in n)


def test_extract_copies_weights():
    """The static net owns copies: training it does not touch the supernet."""
    sp = space("ofa_mbv3_digits")
    net = build_supernet(sp)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    static = net.extract(sp.min_arch())
    with torch.no_grad():
        for p in static.parameters():
            p.add_(1.0)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _bn_inputs(model: nn.Module) -> tuple[list[_BatchNorm], dict[int, list[torch.Tensor]], list]:
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(bns))}
    hooks = [bn.register_forward_pre_hook(lambda m, inp, i=i: seen[i].append(inp[0].detach().clone()))
             for i, bn in enumerate(bns)]
    return bns, seen, hooks


def test_bn_recalibration_is_the_cumulative_average(one_thread):
    sp = space("ofa_mbv3_digits")
    torch.manual_seed(2)
    net = build_supernet(sp)
    perturb(net, 2)
    arch = sp.sample(np.random.default_rng(5))
    static = net.extract(arch).eval()
    g = torch.Generator().manual_seed(3)
    r = sp.resolution(arch)
    batches = [torch.randn(6, 1, r, r, generator=g) * (1 + i) for i in range(4)]
    bns, seen, hooks = _bn_inputs(static)
    assert recalibrate_bn(static, batches, mode="cumulative") == 24
    for h in hooks:
        h.remove()
    assert not static.training  # mode restored
    for i, bn in enumerate(bns):
        xs = seen[i]
        assert len(xs) == 4 and bn.momentum == 0.1 and int(bn.num_batches_tracked) == 4
        mean = torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0)
        var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in xs]).mean(0)
        assert torch.allclose(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
        assert torch.allclose(bn.running_var, var, rtol=1e-4, atol=1e-5)
    # the perturbed statistics are gone: recalibrating again on other data gives other stats
    again = [b[:, :, :, :] * 0.5 for b in batches]
    first = bns[0].running_mean.clone()
    recalibrate_bn(static, again, mode="cumulative")
    assert not torch.allclose(bns[0].running_mean, first)
    # resizing: batches at another size are resized to the arch's resolution
    big = [F.interpolate(b, size=(r + 8, r + 8), mode="bilinear", align_corners=False) for b in batches]
    assert recalibrate_bn(static, big, resolution=r, mode="cumulative") == 24


def test_bn_recalibration_through_the_supernet_matches_the_static_net(one_thread):
    """Recalibrating the supernet with an arch active (elastic BN over the first channels)
    gives the statistics that recalibrating the extracted static net gives."""
    sp = space("ofa_mbv3_digits")
    torch.manual_seed(3)
    net = build_supernet(sp)
    perturb(net, 3)
    g = torch.Generator().manual_seed(4)
    rng = np.random.default_rng(6)
    for arch in (sp.min_arch(), sp.sample(rng)):
        r = sp.resolution(arch)
        batches = [torch.randn(5, 1, r, r, generator=g) for _ in range(3)]
        static = net.extract(arch)
        recalibrate_bn(static, batches)
        net.set_active(arch)
        recalibrate_bn(net, batches)
        via_supernet = net.extract(arch)
        a = {k: v for k, v in static.state_dict().items() if "running" in k}
        b = {k: v for k, v in via_supernet.state_dict().items() if "running" in k}
        assert a.keys() == b.keys() and len(a) > 10
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k
        x = torch.randn(3, 1, r, r, generator=g)
        with torch.no_grad():
            assert torch.allclose(static.eval()(x), via_supernet.eval()(x), atol=1e-5)
