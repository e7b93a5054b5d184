"""Family ``darts_cell``: cell ops, the single-path supernet, the PC-DARTS search network,
genotype derivation and the derived (static) network.

Three networks share the ops and the cell wiring of :class:`nasplat.space.DartsSpace`:

* :class:`DartsSupernet` (registered in ``SUPERNETS``): single-path, every op of every
  edge held, ``set_active(arch)`` picks one per edge, ``extract(arch)`` copies out a
  :class:`DerivedNet`.
* :class:`PCDartsNetwork`: the differentiable PC-DARTS search network (Xu et al. 2020):
  on each edge the first C/K channels go through the mixed op
  Σ_o softmax(α)_o · o(x[:C/K]), the rest bypass (2x2 max-pool on reduction edges), the
  two parts are concatenated and channel-shuffled with K groups; node j sums its edges
  weighted by softmax_i(β_{·,j}) (edge normalisation). K=1 is plain DARTS.
* :class:`DerivedNet`: a genotype as a static network (cells/channels from the space),
  optional auxiliary head and drop-path for retraining; exportable to ONNX.

The search network computes exactly the paper's function, organised to save memory and
time (written from the paper's equations, not from the official code):

* shuffle is linear, so Σ_i β_i·shuffle(cat(m_i, b_i)) = shuffle(cat(Σ_i β_i m_i,
  Σ_i β_i b_i)): one concatenation and one shuffle per *node* instead of per edge, and no
  full-width per-edge tensor is ever built or saved for backward;
* the α·β-weighted op outputs of all edges of a node go into one C/K-channel sum;
* the ``none`` op is skipped (its output is 0; α_none still gets its softmax gradient);
* parameter-free work that is identical for every edge leaving the same state is done
  once per state: the leading ReLU of the conv ops, the pooling ops (+ their
  affine-free BN, as in DARTS' search cell) and the 2x2 max-pool bypass. BN running
  statistics of the pooling ops are thus kept per source state rather than per edge
  (they only matter in eval mode, which the search does not use for α).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..space import Arch
from ..space._darts import OPS, CellPlan, DartsSpace, Genotype
from ._base import SUPERNETS, Supernet


# -- ops --------------------------------------------------------------------------------
class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class ReluFirst(nn.Module):
    """An op that starts with ReLU: ``forward(x) = body(relu(x))``. The search network
    calls ``body`` on a ReLU output shared by every edge leaving the same state."""

    body: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


class ReLUConvBN(ReluFirst):
    def __init__(self, cin: int, cout: int, k: int, stride: int, affine: bool = True):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                                  nn.BatchNorm2d(cout, affine=affine))


class SepConv(ReluFirst):
    """DARTS separable conv: (dw k x k, pw 1x1, BN) twice with a ReLU between (stride on the first)."""

    def __init__(self, c: int, k: int, stride: int, affine: bool = True):
        super().__init__()
        p = k // 2
        self.body = nn.Sequential(
            nn.Conv2d(c, c, k, stride, p, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, k, 1, p, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine))


class DilConv(ReluFirst):
    def __init__(self, c: int, k: int, stride: int, dilation: int, affine: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, k, stride, dilation * (k - 1) // 2, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=affine))


class FactorizedReduce(ReluFirst):
    """ReLU, two 1x1 stride-2 convs (the second on the input shifted by one pixel), concat, BN."""

    def __init__(self, cin: int, cout: int, affine: bool = True):
        super().__init__()
        self.body = _FRBody(cin, cout, affine)


class _FRBody(nn.Module):
    def __init__(self, cin: int, cout: int, affine: bool):
        super().__init__()
        self.conv_1 = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.conv_2 = nn.Conv2d(cin, cout - cout // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class ResidualBlock(nn.Module):
    """NAS-Bench-201's reduction block: ReLUConvBN 3x3 stride 2, ReLUConvBN 3x3, shortcut
    2x2 avg-pool + 1x1 conv."""

    def __init__(self, cin: int, cout: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2, affine)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1, affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, inputs: list[torch.Tensor], drop_prob: float = 0.0) -> torch.Tensor:
        x = inputs[-1]
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def make_op(name: str, c: int, stride: int, affine: bool = True) -> nn.Module:
    """The module of a registered op with ``c`` channels in and out."""
    spec = OPS[name]
    kind, k = spec.kind, spec.kernel
    if kind == "none":
        return Zero(stride)
    if kind == "skip":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if kind == "max_pool":
        return nn.MaxPool2d(k, stride, k // 2)
    if kind == "avg_pool":
        return nn.AvgPool2d(k, stride, k // 2, count_include_pad=False)
    if kind == "sep_conv":
        return SepConv(c, k, stride, affine)
    if kind == "dil_conv":
        return DilConv(c, k, stride, spec.dilation, affine)
    if kind == "nor_conv":
        return ReLUConvBN(c, c, k, stride, affine)
    raise ValueError(f"no module for op kind {kind!r}")


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, rescaling the rest (DARTS)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x.div(keep).mul(mask)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: channel g*(C/groups)+m goes to m*groups+g."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


# -- cells shared by the derived net and the single-path supernet --------------------------
def _preprocess(space: DartsSpace, cp: CellPlan, affine: bool) -> nn.ModuleList:
    c = space.config
    pre = nn.ModuleList()
    if c.cell_inputs == 2:
        pre.append(FactorizedReduce(cp.c_in[0], cp.c, affine) if cp.reduction_prev
                   else ReLUConvBN(cp.c_in[0], cp.c, 1, 1, affine))
        pre.append(ReLUConvBN(cp.c_in[1], cp.c, 1, 1, affine))
    else:
        pre.append(ReLUConvBN(cp.c_in[0], cp.c, 1, 1, affine) if cp.c_in[0] != cp.c else nn.Identity())
    return pre


def _edge_stride(space: DartsSpace, cp: CellPlan, src: int) -> int:
    return 2 if cp.reduction and src < space.config.cell_inputs else 1


class DerivedCell(nn.Module):
    """A cell with one op per kept edge: ``edges[j]`` lists (op, source) of node j."""

    def __init__(self, space: DartsSpace, cp: CellPlan, edges: list[list[list[Any]]], affine: bool = True):
        super().__init__()
        self.n_in = space.config.cell_inputs
        self.reduction = cp.reduction
        self.concat = space.config.output == "concat"
        self.preprocess = _preprocess(space, cp, affine)
        self.ops = nn.ModuleList()
        self.wiring: list[list[tuple[int, int, bool]]] = []  # per node: (op index, source, is identity)
        for node in edges:
            wires = []
            for op, src in node:
                module = make_op(op, cp.c, _edge_stride(space, cp, src), affine)
                wires.append((len(self.ops), int(src), isinstance(module, nn.Identity)))
                self.ops.append(module)
            self.wiring.append(wires)

    def forward(self, inputs: list[torch.Tensor], drop_prob: float = 0.0) -> torch.Tensor:
        states = [pre(x) for pre, x in zip(self.preprocess, inputs[-self.n_in:])]
        for wires in self.wiring:
            if not wires:  # every edge was `none`
                s = states[0]
                states.append(s[:, :, ::2, ::2].mul(0.0) if self.reduction else s.mul(0.0))
                continue
            total = None
            for k, src, ident in wires:
                h = self.ops[k](states[src])
                if drop_prob > 0 and self.training and not ident:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        nodes = states[self.n_in:]
        return torch.cat(nodes, dim=1) if self.concat else nodes[-1]


AUX_POOLS = ("darts", "adaptive")


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier for CIFAR (training only, ``AuxiliaryHeadCIFAR``): ReLU,
    AvgPool2d(5, stride 3, count_include_pad=False), 1x1 conv 128, BN, ReLU, 2x2 conv 768,
    BN, ReLU, linear. Its pooling expects the 8x8 map of the 20-cell CIFAR network (8..10
    pixels pool to 2x2). ``pool="adaptive"`` (a deviation, off by default) pools any map
    to 2x2 instead, for inputs where the head's map is not 8x8 (e.g. 16-pixel digits)."""

    def __init__(self, c: int, classes: int, pool: str = "darts"):
        super().__init__()
        pooling = nn.AdaptiveAvgPool2d(2) if pool == "adaptive" else nn.AvgPool2d(5, 3, 0, count_include_pad=False)
        self.features = nn.Sequential(
            nn.ReLU(), pooling, nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128),
            nn.ReLU(inplace=True), nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def check_auxiliary(space: DartsSpace, pool: str) -> None:
    """The DARTS head's pooling needs an 8..10-pixel map after the auxiliary cell."""
    if pool not in AUX_POOLS:
        raise UserError(f"unknown auxiliary pool {pool!r} (known: {', '.join(AUX_POOLS)})", None,
                        "train.options.auxiliary_pool")
    size = space.aux_channels()[1]
    if pool == "darts" and not 8 <= size <= 10:
        raise UserError(f"DARTS' auxiliary head pools an 8x8 map (5x5 window, stride 3); after cell "
                        f"{space.aux_cell()} this space's map is {size}x{size}: set train.options."
                        f"auxiliary_pool: adaptive, or auxiliary: false", space.source, "train.options.auxiliary")


class _Head(nn.Module):
    def __init__(self, c: int, classes: int, pre_bn: bool, affine: bool = True):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(c, affine=affine), nn.ReLU()) if pre_bn else nn.Identity()
        self.classifier = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pre(x).mean((2, 3)))


def _stem(space: DartsSpace, affine: bool = True) -> nn.Sequential:
    c = space.config
    cs = c.stem.multiplier * c.channels
    return nn.Sequential(nn.Conv2d(c.input_channels, cs, c.stem.kernel, c.stem.stride, c.stem.kernel // 2,
                                   bias=False), nn.BatchNorm2d(cs, affine=affine))


class DerivedNet(nn.Module):
    """A genotype as a static network: ``forward(x) -> logits``; ``forward(x, with_aux=True)``
    also returns the auxiliary logits (None without the head, or in eval mode)."""

    def __init__(self, space: DartsSpace, genotype: Genotype, auxiliary: bool = False,
                 drop_path_prob: float = 0.0, aux_pool: str = "darts"):
        super().__init__()
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        self.n_in = space.config.cell_inputs
        self.stem = _stem(space)
        self.cells = nn.ModuleList()
        plan = space.plan()
        for cp in plan:
            if cp.kind == "residual":
                self.cells.append(ResidualBlock(cp.c_in[-1], cp.c))
            else:
                self.cells.append(DerivedCell(space, cp, genotype[cp.kind]))
        self.aux_after = space.aux_cell()
        if auxiliary:
            check_auxiliary(space, aux_pool)
        self.aux_head = AuxiliaryHead(space.aux_channels()[0], space.config.num_classes, aux_pool) if auxiliary else None
        self.head = _Head(space.final_channels(), space.config.num_classes, space.config.output == "last")
        self.resolution = space.config.resolution

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        s = self.stem(x)
        states = [s] * self.n_in
        aux = None
        for k, cell in enumerate(self.cells):
            out = cell(states, self.drop_path_prob)
            states = (states + [out])[-self.n_in:]
            if k == self.aux_after and self.aux_head is not None and self.training:
                aux = self.aux_head(out)
        logits = self.head(states[-1])
        return (logits, aux) if with_aux else logits


# -- genotype I/O and derivation -------------------------------------------------------------
def read_genotype(space: DartsSpace, genotype: str | Path | Mapping[str, Any]) -> Genotype:
    """A validated genotype from a JSON file path or a mapping."""
    if isinstance(genotype, Mapping):
        return space.check_genotype(genotype, "genotype")
    path = Path(genotype)
    if not path.is_file():
        raise UserError("genotype file not found", path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"not a JSON genotype ({type(e).__name__})", path) from None
    if isinstance(data, dict) and "genotype" in data and isinstance(data["genotype"], dict):
        data = data["genotype"]  # a derived.json written by `standalone`
    return space.check_genotype(data, path)


def build_derived(space: DartsSpace, genotype_path_or_dict: str | Path | Mapping[str, Any],
                  auxiliary: bool = False, drop_path_prob: float = 0.0, aux_pool: str = "darts") -> DerivedNet:
    """The static derived network of a genotype (fresh weights)."""
    if not isinstance(space, DartsSpace):
        raise UserError(f"a genotype needs a darts_cell space, not {space.family!r}", space.source, "family")
    return DerivedNet(space, read_genotype(space, genotype_path_or_dict), auxiliary, drop_path_prob, aux_pool)


def beta_weights(beta: torch.Tensor, space: DartsSpace) -> torch.Tensor:
    """Edge normalisation: softmax of β over the incoming edges of each node separately."""
    out = []
    start = 0
    for j in range(space.config.nodes):
        n = space.config.cell_inputs + j
        out.append(torch.softmax(beta[start:start + n], dim=0))
        start += n
    return torch.cat(out)


def derive_genotype(space: DartsSpace, alphas: Mapping[str, torch.Tensor],
                    betas: Mapping[str, torch.Tensor] | None = None) -> Genotype:
    """PC-DARTS genotype: edge weight = softmax(α)·softmax_node(β); per node keep the
    ``genotype_edges`` strongest incoming edges (strength: best op except ``none``), each
    with its strongest op except ``none``. With ``genotype_edges: all`` (NB201 shape) every
    edge keeps its argmax op over all ops, and an edge whose argmax is ``none`` is dropped."""
    ops = space.op_names
    none = ops.index("none") if "none" in ops else None
    keep = space.config.genotype_edges
    geno: Genotype = {"normal": None, "reduce": None}
    for t in space.cell_types():
        with torch.no_grad():
            w = torch.softmax(alphas[t].detach().float(), dim=-1)
            if betas is not None:
                w = w * beta_weights(betas[t].detach().float(), space)[:, None]
            masked = w.clone()
            if none is not None:
                masked[:, none] = -1.0
        cell = []
        e = 0
        for j in range(space.config.nodes):
            n = space.config.cell_inputs + j
            rows = list(range(e, e + n))
            e += n
            if keep == "all":
                chosen = [(ops[int(w[r].argmax())], r - rows[0]) for r in rows]
                cell.append([[op, src] for op, src in chosen if op != "none"])
                continue
            strength = sorted(rows, key=lambda r: (-float(masked[r].max()), r))[: min(int(keep), n)]
            cell.append([[ops[int(masked[r].argmax())], r - rows[0]] for r in sorted(strength)])
        geno[t] = cell
    return geno


# -- the single-path supernet ------------------------------------------------------------
class SinglePathCell(nn.Module):
    """Every op on every edge; ``ops[e][op]`` (``none`` has no module)."""

    def __init__(self, space: DartsSpace, cp: CellPlan):
        super().__init__()
        self.space, self.cp = space, cp
        self.n_in = space.config.cell_inputs
        self.reduction = cp.reduction
        self.concat = space.config.output == "concat"
        self.preprocess = _preprocess(space, cp, True)
        self.edges = space.edges()
        self.ops = nn.ModuleList()
        for j, i in self.edges:
            stride = _edge_stride(space, cp, i)
            self.ops.append(nn.ModuleDict({o: make_op(o, cp.c, stride) for o in space.op_names if o != "none"}))
        self.choice: list[str] = [space.op_names[-1]] * len(self.edges)

    def forward(self, inputs: list[torch.Tensor], drop_prob: float = 0.0) -> torch.Tensor:
        states = [pre(x) for pre, x in zip(self.preprocess, inputs[-self.n_in:])]
        e = 0
        for j in range(self.space.config.nodes):
            total = None
            for i in range(self.n_in + j):
                op = self.choice[e]
                if op != "none":
                    h = self.ops[e][op](states[i])
                    total = h if total is None else total + h
                e += 1
            if total is None:
                s = states[0]
                total = s[:, :, ::2, ::2].mul(0.0) if self.reduction else s.mul(0.0)
            states.append(total)
        nodes = states[self.n_in:]
        return torch.cat(nodes, dim=1) if self.concat else nodes[-1]

    def to_static(self, edges: list[list[list[Any]]]) -> DerivedCell:
        cell = DerivedCell(self.space, self.cp, edges)
        cell.preprocess = copy.deepcopy(self.preprocess)
        index = {(j, i): e for e, (j, i) in enumerate(self.edges)}
        k = 0
        for j, node in enumerate(edges):
            for op, src in node:
                cell.ops[k] = copy.deepcopy(self.ops[index[(j, src)]][op])
                k += 1
        return cell


@SUPERNETS.register("darts_cell")
class DartsSupernet(Supernet):
    """Single-path weight-sharing supernet over a ``darts_cell`` space (one op per edge)."""

    space: DartsSpace

    def __init__(self, space: DartsSpace):
        super().__init__(space)
        self.n_in = space.config.cell_inputs
        self.stem = _stem(space)
        self.cells = nn.ModuleList()
        for cp in space.plan():
            self.cells.append(ResidualBlock(cp.c_in[-1], cp.c) if cp.kind == "residual" else SinglePathCell(space, cp))
        self.head = _Head(space.final_channels(), space.config.num_classes, space.config.output == "last")
        self.set_active(space.max_arch())

    def set_active(self, arch: Arch) -> None:
        self.active_arch = arch
        for cp, cell in zip(self.space.plan(), self.cells):
            if isinstance(cell, SinglePathCell):
                cell.choice = [str(arch[self.space.edge_name(cp.kind, j, i)]) for j, i in self.space.edges()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        states = [s] * self.n_in
        for cell in self.cells:
            states = (states + [cell(states)])[-self.n_in:]
        return self.head(states[-1])

    def extract(self, arch: Arch) -> DerivedNet:
        geno = self.space.genotype_of(arch)
        net = DerivedNet(self.space, geno)
        net.stem = copy.deepcopy(self.stem)
        for k, (cp, cell) in enumerate(zip(self.space.plan(), self.cells)):
            net.cells[k] = copy.deepcopy(cell) if cp.kind == "residual" else cell.to_static(geno[cp.kind])
        net.head = copy.deepcopy(self.head)
        return net.train(self.training)


# -- the PC-DARTS search network ------------------------------------------------------------
class PCCell(nn.Module):
    """A search cell with partial-channel mixed ops on every edge (see the module doc)."""

    def __init__(self, space: DartsSpace, cp: CellPlan, k: int):
        super().__init__()
        self.space, self.cp, self.k = space, cp, k
        self.n_in = space.config.cell_inputs
        self.nodes = space.config.nodes
        self.concat = space.config.output == "concat"
        if cp.c % k:
            raise UserError(f"cell channels {cp.c} are not divisible by K={k}", space.source, "train.options.K")
        self.cp_part = cp.c // k
        self.preprocess = _preprocess(space, cp, False)
        self.edges = space.edges()
        ops = space.op_names
        self.op_names = ops
        self.param_ops = [o for o in ops if OPS[o].kind not in ("none", "max_pool", "avg_pool")
                          and not (OPS[o].kind == "skip")]
        self.skip = "skip_connect" in ops
        self.pool_ops = [o for o in ops if OPS[o].kind in ("max_pool", "avg_pool")]
        self.op_index = {o: n for n, o in enumerate(ops)}
        # per edge: the parametrised ops (and FactorizedReduce for a stride-2 skip)
        self.edge_ops = nn.ModuleList()
        for j, i in self.edges:
            stride = _edge_stride(space, cp, i)
            d = {o: make_op(o, self.cp_part, stride, affine=False) for o in self.param_ops}
            if self.skip and stride == 2:
                d["skip_connect"] = make_op("skip_connect", self.cp_part, 2, affine=False)
            self.edge_ops.append(nn.ModuleDict(d))
        # per source state: pooling ops (+ affine-free BN, as DARTS' search cell)
        n_states = self.n_in + self.nodes - 1
        self.pools = nn.ModuleList()
        for src in range(n_states):
            stride = _edge_stride(space, cp, src)
            self.pools.append(nn.ModuleDict({
                o: nn.Sequential(make_op(o, self.cp_part, stride), nn.BatchNorm2d(self.cp_part, affine=False))
                for o in self.pool_ops}))

    def forward(self, inputs: list[torch.Tensor], w_alpha: torch.Tensor, w_beta: torch.Tensor) -> torch.Tensor:
        """``w_alpha``: softmax(α) (edges x ops); ``w_beta``: per-node-normalised β (edges)."""
        k, cpart = self.k, self.cp_part
        states = [pre(x) for pre, x in zip(self.preprocess, inputs[-self.n_in:])]
        # per-source caches of the parameter-free work, filled lazily
        relu: dict[int, torch.Tensor] = {}
        pooled: dict[tuple[int, str], torch.Tensor] = {}
        bypass: dict[int, torch.Tensor] = {}
        coef = w_alpha * w_beta[:, None]  # α·β weight of every (edge, op)
        e = 0
        for j in range(self.nodes):
            part = None
            rest = None
            for i in range(self.n_in + j):
                x = states[i]
                stride = _edge_stride(self.space, self.cp, i)
                xp = x[:, :cpart] if k > 1 else x
                c_e = coef[e]
                terms: list[tuple[torch.Tensor, torch.Tensor]] = []
                ops = self.edge_ops[e]
                if self.skip:
                    if stride == 1:
                        terms.append((c_e[self.op_index["skip_connect"]], xp))
                    else:
                        if i not in relu:
                            relu[i] = F.relu(xp)
                        terms.append((c_e[self.op_index["skip_connect"]], ops["skip_connect"].body(relu[i])))
                for o in self.pool_ops:
                    if (i, o) not in pooled:
                        pooled[(i, o)] = self.pools[i][o](xp)
                    terms.append((c_e[self.op_index[o]], pooled[(i, o)]))
                for o in self.param_ops:
                    if i not in relu:
                        relu[i] = F.relu(xp)
                    terms.append((c_e[self.op_index[o]], ops[o].body(relu[i])))
                for c, t in terms:
                    part = t * c if part is None else torch.addcmul(part, t, c)
                if k > 1:
                    if i not in bypass:
                        xb = x[:, cpart:]
                        bypass[i] = F.max_pool2d(xb, 2, 2) if stride == 2 else xb
                    b = bypass[i]
                    rest = b * w_beta[e] if rest is None else torch.addcmul(rest, b, w_beta[e])
                e += 1
            if k > 1:
                assert part is not None and rest is not None
                bsz, _, h, w = part.shape
                node = torch.cat([part.unsqueeze(2), rest.view(bsz, k - 1, cpart, h, w).transpose(1, 2)], dim=2)
                states.append(node.view(bsz, k * cpart, h, w))
            else:
                if part is None:  # an op set of `none` only
                    s = states[0]
                    part = s[:, :, ::2, ::2].mul(0.0) if self.cp.reduction else s.mul(0.0)
                states.append(part)
        nodes = states[self.n_in:]
        return torch.cat(nodes, dim=1) if self.concat else nodes[-1]


class PCDartsNetwork(nn.Module):
    """The PC-DARTS search network over a ``darts_cell`` space with partial-channel factor ``k``.

    Architecture parameters (α per cell type: edges x ops; β per cell type: edges) are
    ``nn.Parameter``s, initialised 1e-3·randn (as DARTS / PC-DARTS), so they are saved with
    the weights; :meth:`arch_parameters` and :meth:`weight_parameters` split them.
    """

    def __init__(self, space: DartsSpace, k: int = 4, edge_normalization: bool = True):
        super().__init__()
        self.space, self.k = space, k
        self.edge_normalization = edge_normalization
        self.n_in = space.config.cell_inputs
        self.stem = _stem(space)
        self.cells = nn.ModuleList()
        self.kinds = []
        for cp in space.plan():
            self.kinds.append(cp.kind)
            self.cells.append(ResidualBlock(cp.c_in[-1], cp.c, affine=True) if cp.kind == "residual"
                              else PCCell(space, cp, k))
        self.head = _Head(space.final_channels(), space.config.num_classes, space.config.output == "last")
        n_e, n_o = len(space.edges()), len(space.op_names)
        self.alphas = nn.ParameterDict({t: nn.Parameter(1e-3 * torch.randn(n_e, n_o)) for t in space.cell_types()})
        self.betas = nn.ParameterDict({t: nn.Parameter(1e-3 * torch.randn(n_e)) for t in space.cell_types()})

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values()) + list(self.betas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def named_weight_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        ids = {id(p) for p in self.arch_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in ids]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {}
        for t in self.alphas:
            wa = torch.softmax(self.alphas[t], dim=-1)
            wb = (beta_weights(self.betas[t], self.space) if self.edge_normalization
                  else torch.ones_like(self.betas[t]))
            weights[t] = (wa, wb)
        s = self.stem(x)
        states = [s] * self.n_in
        for kind, cell in zip(self.kinds, self.cells):
            out = cell(states) if kind == "residual" else cell(states, *weights[kind])
            states = (states + [out])[-self.n_in:]
        return self.head(states[-1])

    def genotype(self) -> Genotype:
        betas = dict(self.betas) if self.edge_normalization else None
        return derive_genotype(self.space, dict(self.alphas), betas)


# -- PA&DA: the weights each edge's chosen op used, one op distribution per cell type ------------
from .attribution import CHOICE_GROUPS, CHOICE_PARAMETERS  # noqa: E402


@CHOICE_PARAMETERS.register("darts_cell")
def _darts_choice_parameters(net: DartsSupernet, arch: Arch) -> dict[str, list[torch.Tensor]]:
    """Per edge choice: the parameters of its op in every cell of that type (the official
    code sums the op's gradient norms over the cells). Parameter-free ops (none, skip
    at stride 1, pooling) map to nothing: G = 0, as in the official code."""
    out: dict[str, list[torch.Tensor]] = {}
    for cp, cell in zip(net.space.plan(), net.cells):
        if not isinstance(cell, SinglePathCell):
            continue
        for e, (j, i) in enumerate(cell.edges):
            name = net.space.edge_name(cp.kind, j, i)
            op = str(arch[name])
            if op in cell.ops[e]:
                out.setdefault(name, []).extend(cell.ops[e][op].parameters())
    return out


@CHOICE_GROUPS.register("darts_cell")
def _darts_choice_groups(space: DartsSpace) -> list[list[str]]:
    """The edges of one cell type share one op distribution (the official PA&DA code keeps
    one distribution for every edge of the NAS-Bench-201 cell)."""
    return [[space.edge_name(t, j, i) for j, i in space.edges()] for t in space.cell_types()]
