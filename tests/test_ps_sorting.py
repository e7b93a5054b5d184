"""Width importance sorting (OFA's re_organize_middle_weights) keeps functions and nesting."""
from __future__ import annotations

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


def _net(seed=0):
    torch.manual_seed(seed)
    space = space_from_dict(PS_SPACE)
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


def test_second_expand_sort_keeps_every_trained_width():
    space, net = _net(1)
    net.eval()
    sort_middle_channels(net, 1)
    # "train" a bit more: perturb the projection so the importance order changes
    with torch.no_grad():
        for blocks in net.stages:
            for blk in blocks:
                blk.project.weight.mul_(torch.rand_like(blk.project.weight) * 2)
    rng = np.random.default_rng(1)
    trained = [space.arch({**space.sample(rng),
                           **{p.name: int(rng.choice([3, 4])) for p in space.params if p.name.startswith("e")}})
               for _ in range(12)]
    smallest = [space.arch({**a, **{p.name: 2 for p in space.params if p.name.startswith("e")}}) for a in trained[:4]]
    x = torch.randn(16, 1, 10, 10)
    before, before_small = _outputs(net, trained, x), _outputs(net, smallest, x)
    first_band = set(net.stages[0][0].expand_conv.weight[:24].flatten(1).sum(1).tolist())
    sort_middle_channels(net, 2)  # expand/2 start: widths of e=4 (full) and e=3 were trained
    for a, b in zip(before, _outputs(net, trained, x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the channels of the e=3 band stay in it (permuted within), importance sorted per band
    blk = net.stages[0][0]
    assert set(blk.expand_conv.weight[:24].flatten(1).sum(1).tolist()) == first_band
    imp = blk.project.weight.abs().sum((0, 2, 3))
    assert torch.all(imp[:23] >= imp[1:24]) and torch.all(imp[24:-1] >= imp[25:])
    # the untrained smallest width does change: sorting picked new channels for it
    changed = [not torch.allclose(a, b, atol=1e-5) for a, b in zip(before_small, _outputs(net, smallest, x))]
    assert any(changed)
