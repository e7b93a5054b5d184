"""Width importance sorting (OFA's re_organize_middle_weights) keeps functions and nesting."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from _ps_helpers import PS_SPACE
from nasplat.space import space_from_dict
from nasplat.supernet import build_supernet
from nasplat.supernet.sorting import band_sort_order, sort_middle_channels


def test_band_sort_order_sorts_within_bands_only():
    imp = torch.tensor([0.1, 0.5, 0.3, 9.0, 0.2, 0.7, 0.05, 0.6])
    assert band_sort_order(imp, []).tolist() == [3, 5, 7, 1, 2, 4, 0, 6]
    # bands [0,4) and [4,8): the big channel 3 stays in the first band
    assert band_sort_order(imp, [4, 8]).tolist() == [3, 1, 2, 0, 5, 7, 4, 6]
    # OFA's -k*1e5 offsets give the same order
    off = imp.clone()
    off[4:] -= 1e5
    assert band_sort_order(imp, [4]).tolist() == torch.sort(off, descending=True, stable=True).indices.tolist()


def _net(seed=0, cfg=PS_SPACE):
    torch.manual_seed(seed)
    space = space_from_dict(cfg)
    net = build_supernet(space)
    # non-trivial BN statistics and affine parameters, so a wrong permutation shows
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
            if hasattr(m, "transforms"):
                for t in m.transforms.values():
                    t.add_(0.05 * torch.randn_like(t))
    return space, net


def _outputs(net, archs, x):
    outs = []
    with torch.no_grad():
        for a in archs:
            net.set_active(a)
            torch.manual_seed(0)  # the same dropout masks
            outs.append(net(x))
    return outs


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_full_width_function_unchanged_and_channels_sorted(mode):
    space, net = _net()
    getattr(net, mode)()
    rng = np.random.default_rng(0)
    full_width = [space.arch({**space.sample(rng), **{p.name: 4 for p in space.params if p.name.startswith("e")}})
                  for _ in range(6)] + [space.max_arch()]
    x = torch.randn(16, 1, 10, 10)
    before = _outputs(net, full_width, x)
    w_before = net.stages[1][0].project.weight.detach().clone()
    assert sort_middle_channels(net, 1) == 6
    after = _outputs(net, full_width, x)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the permutation did something and importance now decreases along the channels
    assert not torch.equal(w_before, net.stages[1][0].project.weight)
    for blocks in net.stages:
        for blk in blocks:
            imp = blk.project.weight.abs().sum((0, 2, 3))
            assert torch.all(imp[:-1] >= imp[1:])
            if blk.se is not None:
                se_imp = blk.se.expand.weight.abs().sum((0, 2, 3))
                assert torch.all(se_imp[:-1] >= se_imp[1:])


@pytest.mark.parametrize("se_bands", [True, False])
def test_second_expand_sort_keeps_every_trained_width(se_bands):
    """With ``se_bands`` every trained width keeps its function; OFA's own sort (the
    default) re-sorts the SE hidden channels without bands, which moves the trained
    subnets whose SE is narrower than the full width's (stage 1 here: expand 4 -> SE 16,
    expand 6 -> SE 24) a little."""
    cfg = copy.deepcopy(PS_SPACE)
    cfg["stages"][1]["expands"] = [3, 4, 6]
    space, net = _net(1, cfg)
    net.eval()
    sort_middle_channels(net, 1)
    # "train" a bit more: perturb the projection and SE so the importance orders change
    with torch.no_grad():
        for blocks in net.stages:
            for blk in blocks:
                blk.project.weight.mul_(torch.rand_like(blk.project.weight) * 2)
                if blk.se is not None:
                    blk.se.expand.weight.mul_(torch.rand_like(blk.se.expand.weight) * 2)
    rng = np.random.default_rng(1)
    e_params = [p for p in space.params if p.name.startswith("e")]
    trained = [space.arch({**space.sample(rng), **{p.name: sorted(p.choices)[int(rng.integers(1, 3))]
                                                   for p in e_params}}) for _ in range(12)]
    smallest = [space.arch({**a, **{p.name: min(p.choices) for p in e_params}}) for a in trained[:4]]
    x = torch.randn(16, 1, 10, 10)
    before, before_small = _outputs(net, trained, x), _outputs(net, smallest, x)
    first_band = set(net.stages[0][0].expand_conv.weight[:24].flatten(1).sum(1).tolist())
    sort_middle_channels(net, 2, se_bands)  # expand/2 start: the two largest widths were trained
    same = [torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(before, _outputs(net, trained, x))]
    if se_bands:
        assert all(same)
    else:  # OFA: the SE-narrow trained subnets move, those at full stage-1 width do not
        se_full = [all(a[f"e1_{j}"] == 6 for j in range(int(a["d1"]))) for a in trained]
        assert all(s for s, f in zip(same, se_full) if f) and not all(same)
    # the channels of the e=3 band stay in it (permuted within), importance sorted per band
    blk = net.stages[0][0]
    assert set(blk.expand_conv.weight[:24].flatten(1).sum(1).tolist()) == first_band
    imp = blk.project.weight.abs().sum((0, 2, 3))
    assert torch.all(imp[:23] >= imp[1:24]) and torch.all(imp[24:-1] >= imp[25:])
    # the untrained smallest width does change: sorting picked new channels for it
    changed = [not torch.allclose(a, b, atol=1e-5) for a, b in zip(before_small, _outputs(net, smallest, x))]
    assert any(changed)
