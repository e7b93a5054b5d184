"""darts_cell: space language, single-path supernet, PC-DARTS search network internals,
genotype derivation, derived network and its ONNX export."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nasplat.errors import UserError
from nasplat.export import to_onnx, verify
from nasplat.space import load_space, space_from_dict
from nasplat.supernet import build_supernet
from nasplat.supernet.darts_cell import (
    DartsSupernet,
    PCCell,
    PCDartsNetwork,
    beta_weights,
    build_derived,
    channel_shuffle,
    derive_genotype,
)


def tiny(**over):
    d = dict(family="darts_cell", name="tiny", input_channels=1, num_classes=10, resolution=8, ops="darts",
             cell_inputs=2, nodes=4, cells=3, channels=8, reductions=[1], stem={"multiplier": 2})
    d.update(over)
    return space_from_dict(d)


def count_macs(model, x):
    """Conv + linear MACs by forward hooks (the analytic model's convention)."""
    total = [0]

    def conv(m, inp, out):
        total[0] += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin(m, inp, out):
        total[0] += m.in_features * m.out_features

    hs = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hs += [m.register_forward_hook(lin) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model.eval()(x)
    for h in hs:
        h.remove()
    return total[0]


def test_shipped_spaces(repo):
    darts = load_space(repo / "search_spaces/darts.yaml")
    assert len(darts.edges()) == 14 and darts.op_names[0] == "none" and len(darts.op_names) == 8
    assert [cp.index for cp in darts.plan() if cp.reduction] == [2, 5]
    assert len(darts.params) == 28  # normal + reduce, 14 edges each
    nb = load_space(repo / "search_spaces/nb201.yaml")
    assert len(nb.edges()) == 6 and len(nb.op_names) == 5 and nb.count() == 5**6 == 15625
    # the PC-DARTS search network has the paper's size: 0.30M (K=4) vs 1.93M (K=1)
    n4 = sum(p.numel() for p in PCDartsNetwork(darts, 4).weight_parameters())
    n1 = sum(p.numel() for p in PCDartsNetwork(darts, 1).weight_parameters())
    assert abs(n4 - 0.30e6) < 0.01e6 and abs(n1 - 1.93e6) < 0.01e6


def test_bad_yaml_is_one_line_error():
    with pytest.raises(UserError, match="unknown op set"):
        tiny(ops="nope")
    with pytest.raises(UserError, match="unknown op 'conv_9x9'"):
        tiny(ops=["none", "conv_9x9"])
    with pytest.raises(UserError, match="divisible"):
        tiny(resolution=6, reductions=[0, 1])
    with pytest.raises(UserError, match="unknown key"):
        tiny(foo=1)


@pytest.mark.parametrize("over", [{}, dict(ops="nb201", cell_inputs=1, nodes=3, reduction_cell="residual",
                                           output="last", genotype_edges="all", stem={"multiplier": 1})])
def test_single_path_extract_and_costs(over):
    space = tiny(**over)
    net = build_supernet(space)
    assert isinstance(net, DartsSupernet)
    rng = np.random.default_rng(0)
    x = torch.randn(3, 1, 8, 8)
    for arch in [space.sample(rng) for _ in range(3)] + [space.max_arch(), space.min_arch()]:
        net.set_active(arch)
        static = net.extract(arch).eval()
        net.eval()
        assert torch.allclose(net(x), static(x), atol=1e-5)
        assert space.num_params(arch) == sum(p.numel() for p in static.parameters())
        assert space.macs(arch) == count_macs(static, x[:1])
    assert space.macs(space.max_arch()) > space.macs(space.min_arch())


def test_partial_channels_route_c_over_k_and_shuffle_is_permutation():
    space = tiny()
    k = 4
    cell = PCCell(space, space.plan()[0], k)  # a normal cell, c = 8 -> 2 channels through the ops
    seen = []
    for ops in cell.edge_ops:
        for m in ops.values():
            m.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    for pools in cell.pools:
        for m in pools.values():
            m.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    n_e, n_o = len(space.edges()), len(space.op_names)
    wa = torch.softmax(torch.randn(n_e, n_o), -1)
    wb = beta_weights(torch.randn(n_e), space)
    s0, s1 = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    cell.train()
    # the ops run via their bodies (after a shared ReLU): hook the bodies too
    for ops in cell.edge_ops:
        for m in ops.values():
            m.body.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    out = cell([s0, s1], wa, wb)
    assert seen and set(seen) == {8 // k}
    assert out.shape == (2, 4 * 8, 8, 8)

    # shuffle: a permutation of the channels, with K groups
    x = torch.arange(12.0).view(1, 12, 1, 1)
    y = channel_shuffle(x, 4).flatten()
    assert sorted(y.tolist()) == list(range(12)) and y.tolist()[:4] == [0, 3, 6, 9]

    # the fused cell equals the paper's per-edge formulation:
    # node_j = sum_i w_beta_i * shuffle(cat(sum_o w_alpha_o o(x_i[:C/K]), x_i[C/K:]))
    torch.manual_seed(0)
    cell.eval()  # BN in eval so both computations see the same statistics
    states = [pre(x) for pre, x in zip(cell.preprocess, [s0, s1])]
    e = 0
    cp = cell.cp_part
    for j in range(space.config.nodes):
        node = 0
        for i in range(2 + j):
            xi = states[i]
            xp, xb = xi[:, :cp], xi[:, cp:]
            mixed = 0
            for o, name in enumerate(space.op_names):
                if name == "none":
                    continue
                if name in cell.edge_ops[e]:
                    h = cell.edge_ops[e][name](xp)
                elif name == "skip_connect":
                    h = xp
                else:
                    h = cell.pools[i][name](xp)
                mixed = mixed + wa[e, o] * h
            node = node + wb[e] * channel_shuffle(torch.cat([mixed, xb], 1), k)
            e += 1
        states.append(node)
    want = torch.cat(states[2:], 1)
    assert torch.allclose(cell([s0, s1], wa, wb), want, atol=1e-5)


def test_beta_softmax_is_per_node():
    space = tiny()
    beta = torch.randn(len(space.edges()))
    w = beta_weights(beta, space)
    start = 0
    for j in range(4):
        n = 2 + j
        assert torch.allclose(w[start:start + n].sum(), torch.tensor(1.0))
        assert torch.allclose(w[start:start + n], torch.softmax(beta[start:start + n], 0))
        start += n
    assert not torch.allclose(w, torch.softmax(beta, 0))


def test_genotype_derivation_on_hand_set_weights():
    space = tiny()
    ops = space.op_names
    n_e, n_o = len(space.edges()), len(ops)
    alpha = torch.zeros(n_e, n_o)
    beta = torch.zeros(n_e)
    edges = space.edges()
    # node 0 (edges from 0, 1): `none` dominates edge (0,0) but is never chosen;
    # edge (0,0) strongest non-none op sep_conv_3x3, edge (0,1) max_pool_3x3
    alpha[edges.index((0, 0)), ops.index("none")] = 10
    alpha[edges.index((0, 0)), ops.index("sep_conv_3x3")] = 3
    alpha[edges.index((0, 1)), ops.index("max_pool_3x3")] = 2
    # node 2 (sources 0..3): α favours edges 1 and 3, but β makes edge 0 strongest and
    # pushes edge 3 down: keep {0, 1}
    for i, (op, a) in enumerate([("dil_conv_5x5", 1.0), ("skip_connect", 2.0), ("sep_conv_5x5", 0.5),
                                 ("avg_pool_3x3", 2.0)]):
        alpha[edges.index((2, i)), ops.index(op)] = a
    beta[edges.index((2, 0))] = 3.0
    beta[edges.index((2, 3))] = -3.0
    geno = derive_genotype(space, {"normal": alpha, "reduce": alpha}, {"normal": beta, "reduce": beta})
    cell = geno["normal"]
    assert cell[0] == [["sep_conv_3x3", 0], ["max_pool_3x3", 1]]
    assert cell[2] == [["dil_conv_5x5", 0], ["skip_connect", 1]]
    assert all(len(node) == 2 for node in cell)
    assert all(op != "none" for node in cell for op, _ in node)
    # without β, node 2 keeps the two strongest by α alone: edges 1 and 3
    g2 = derive_genotype(space, {"normal": alpha, "reduce": alpha}, None)
    assert g2["normal"][2] == [["skip_connect", 1], ["avg_pool_3x3", 3]]
    # NB201 shape (all edges, argmax including none)
    nb = tiny(ops="nb201", cell_inputs=1, nodes=3, reduction_cell="residual", output="last",
              genotype_edges="all", stem={"multiplier": 1})
    a = torch.zeros(6, 5)
    a[:, nb.op_names.index("nor_conv_3x3")] = 1
    a[0, nb.op_names.index("none")] = 5
    g3 = derive_genotype(nb, {"normal": a}, {"normal": torch.zeros(6)})
    assert g3["normal"] == [[], [["nor_conv_3x3", 0], ["nor_conv_3x3", 1]],
                            [["nor_conv_3x3", 0], ["nor_conv_3x3", 1], ["nor_conv_3x3", 2]]]


def test_derived_net_aux_drop_path_and_onnx(tmp_path):
    space = tiny()
    net = PCDartsNetwork(space, 2)
    geno = net.genotype()
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps({**geno, "epoch": 3}))
    with pytest.raises(UserError, match="8x8 map"):  # the map after cell 2 is 4x4 here
        build_derived(space, path, auxiliary=True)
    derived = build_derived(space, path, auxiliary=True, drop_path_prob=0.2, aux_pool="adaptive")
    assert derived.genotype == geno
    derived.train()
    logits, aux = derived(torch.randn(4, 1, 8, 8), with_aux=True)
    assert logits.shape == aux.shape == (4, 10)
    assert space.genotype_params(geno, auxiliary=True) == sum(p.numel() for p in derived.parameters())
    derived.eval()
    x = torch.randn(2, 1, 8, 8)
    assert derived(x, with_aux=True)[1] is None
    res = to_onnx(derived, (2, 1, 8, 8))
    assert verify(derived, res.data, x, rtol=1e-3, atol=1e-5) < 1e-4
    with pytest.raises(UserError, match="source"):
        build_derived(space, {"normal": [[["sep_conv_3x3", 5]], [], [], []], "reduce": geno["reduce"]})
    with pytest.raises(UserError, match="not in this space"):
        build_derived(space, {"normal": [[["conv", 0]], [], [], []], "reduce": geno["reduce"]})


def test_reductions_and_auxiliary_head_derive_from_cells(repo, tmp_path, capsys):
    """A copy of darts.yaml with `cells: 20` (no `reductions` line): reduction cells at 20//3
    and 2*20//3 as the official code, the auxiliary head after cell 13; `space info` says so."""
    import yaml

    from nasplat.cli import main

    cfg = yaml.safe_load((repo / "search_spaces/darts.yaml").read_text())
    assert "reductions" not in cfg
    path = tmp_path / "darts20.yaml"
    path.write_text(yaml.safe_dump({**cfg, "cells": 20, "channels": 36, "name": "darts20"}))
    space = load_space(path)
    assert [cp.index for cp in space.plan() if cp.reduction] == [6, 13] and space.aux_cell() == 13
    assert main(["space", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "reductions [6, 13]" in out and "auxiliary_after 13" in out


def test_auxiliary_head_is_darts_on_an_8x8_map():
    space = tiny(resolution=32, reductions=[0, 1])  # 32 -> 16 -> 8: cell 2 (= 2*3//3) outputs 8x8
    assert space.aux_channels()[1] == 8
    geno = PCDartsNetwork(space, 2).genotype()
    net = build_derived(space, geno, auxiliary=True).train()
    f = net.aux_head.features
    pool, conv1, conv2 = f[1], f[2], f[5]
    assert isinstance(f[0], torch.nn.ReLU) and isinstance(pool, torch.nn.AvgPool2d)
    assert (pool.kernel_size, pool.stride, pool.padding, pool.count_include_pad) == (5, 3, 0, False)
    assert (conv1.out_channels, conv1.kernel_size, conv1.bias) == (128, (1, 1), None)
    assert (conv2.out_channels, conv2.kernel_size, conv2.bias) == (768, (2, 2), None)
    assert isinstance(f[3], torch.nn.BatchNorm2d) and isinstance(f[6], torch.nn.BatchNorm2d)
    assert net.aux_head.classifier.in_features == 768
    seen = {}
    net.cells[2].register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    logits, aux = net(torch.randn(2, 1, 32, 32), with_aux=True)
    assert seen["shape"][-2:] == (8, 8) and aux.shape == logits.shape == (2, 10)
    assert space.genotype_params(geno, auxiliary=True) == sum(p.numel() for p in net.parameters())


def test_k1_is_full_width_mixed_op():
    space = tiny()
    net = PCDartsNetwork(space, 1)
    x = torch.randn(2, 1, 8, 8)
    out = net(x)
    out.sum().backward()
    assert all(p.grad is not None for p in net.arch_parameters())
    assert net.cells[0].edge_ops[0]["sep_conv_3x3"].body[0].in_channels == 8


def test_pada_attribution_maps_edges_to_their_op_weights():
    from nasplat.supernet.attribution import choice_parameters

    space = tiny()
    net = build_supernet(space)
    arch = space.arch({p.name: ("sep_conv_3x3" if p.name == "n0_0" else "max_pool_3x3") for p in space.params})
    cp = choice_parameters(net, arch)
    want = {id(p) for c in net.cells if hasattr(c, "ops") and c.cp.kind == "normal"
            for p in c.ops[0]["sep_conv_3x3"].parameters()}
    assert {id(p) for p in cp["n0_0"]} == want and want
    assert cp["n0_1"] == []  # parameter-free op: G = 0, as the official PA&DA code
