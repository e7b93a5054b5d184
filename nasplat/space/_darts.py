"""Family ``darts_cell``: DARTS / NAS-Bench-201-style cell search spaces.

A cell has ``cell_inputs`` inputs (DARTS: the two previous cells; NB201: one) and
``nodes`` intermediate nodes; node ``j`` sums one edge from every earlier state
(inputs first, then nodes), so DARTS (2 inputs, 4 nodes) has 14 edges and NB201
(1 input, 3 nodes) has 6. The op on each edge comes from an op set drawn from the
op registry (:data:`OPS`; named sets in :data:`OP_SETS`: ``darts``, ``nb201``).

Single-path mode (this class): an :class:`Arch` picks one op per edge, shared by all
normal cells (``n{j}_{i}``) and by all searched reduction cells (``r{j}_{i}``), so
``uniform``/``pada`` sampling and every searcher work on it like on any family.
Differentiable mode (PC-DARTS, ``nasplat.supernet.darts_cell``) puts a mixed op on
every edge. A *genotype* (what PC-DARTS derives, and what an Arch maps to) lists, per
node, the kept ``(op, source)`` edges; it builds the static derived network.

MACs count conv + linear multiply-accumulates (pooling and BN are free), params count
conv/linear weights and biases and 2 per BN channel (affine BN, as in the derived
network). Both come from the same :meth:`DartsSpace.plan` the network builders use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import UserError
from ._arch import Arch, Value
from ._base import FAMILIES, Param, SearchSpace, SpaceConfig


# -- the op registry -------------------------------------------------------------------
def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class OpSpec:
    """An op of the registry: its name and its analytic cost at (C, stride, input size).

    The modules are built by ``nasplat.supernet.darts_cell`` (the space never imports
    torch); ``kind`` tells the builder which module family it is.
    """

    name: str
    kind: str  # none | skip | max_pool | avg_pool | sep_conv | dil_conv | nor_conv
    kernel: int = 1
    dilation: int = 1
    cost: Callable[[int, int, int], tuple[int, int]] | None = None

    def costs(self, c: int, stride: int, size: int) -> tuple[int, int]:
        """(MACs, params) of the op with ``c`` channels in and out, affine BN."""
        o = _out(size, stride)
        k, kind = self.kernel, self.kind
        if kind in ("none", "max_pool", "avg_pool"):
            return 0, 0
        if kind == "skip":
            if stride == 1:
                return 0, 0
            return factorized_reduce_costs(c, c, size)
        if kind == "sep_conv":  # twice: dw k x k, pw 1x1, BN (second one at stride 1)
            per = k * k * c + c * c
            return 2 * per * o * o, 2 * per + 4 * c
        if kind == "dil_conv":
            per = k * k * c + c * c
            return per * o * o, per + 2 * c
        if kind == "nor_conv":
            return k * k * c * c * o * o, k * k * c * c + 2 * c
        raise ValueError(kind)


def factorized_reduce_costs(cin: int, cout: int, size: int) -> tuple[int, int]:
    """Two 1x1 stride-2 convs (cin -> cout/2 each, one on a shifted input) + BN."""
    o = _out(size, 2)
    half = cout // 2
    return 2 * cin * half * o * o, 2 * cin * half + 2 * cout


def relu_conv_bn_costs(cin: int, cout: int, k: int, size_out: int) -> tuple[int, int]:
    return k * k * cin * cout * size_out * size_out, k * k * cin * cout + 2 * cout


OPS: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    if spec.name in OPS:
        raise ValueError(f"op {spec.name!r} registered twice")
    OPS[spec.name] = spec
    return spec


for _spec in (
    OpSpec("none", "none"),
    OpSpec("skip_connect", "skip"),
    OpSpec("max_pool_3x3", "max_pool", 3),
    OpSpec("avg_pool_3x3", "avg_pool", 3),
    OpSpec("sep_conv_3x3", "sep_conv", 3),
    OpSpec("sep_conv_5x5", "sep_conv", 5),
    OpSpec("sep_conv_7x7", "sep_conv", 7),
    OpSpec("dil_conv_3x3", "dil_conv", 3, 2),
    OpSpec("dil_conv_5x5", "dil_conv", 5, 2),
    OpSpec("nor_conv_1x1", "nor_conv", 1),
    OpSpec("nor_conv_3x3", "nor_conv", 3),
):
    register_op(_spec)

OP_SETS: dict[str, list[str]] = {
    # DARTS (Liu et al. 2019) / PC-DARTS primitives, in their order
    "darts": ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5"],
    # NAS-Bench-201 (Dong & Yang 2020)
    "nb201": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"],
}


# -- the YAML schema -------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DartsStem(_Strict):
    """conv k x k (input_channels -> multiplier * channels) + BN."""

    multiplier: int = Field(3, ge=1, le=8)
    kernel: Literal[1, 3, 5] = 3
    stride: Literal[1, 2] = 1


class DartsCellConfig(SpaceConfig):
    family: Literal["darts_cell"]
    ops: str | list[str] = "darts"  # a named op set or a list of registered op names
    cell_inputs: Literal[1, 2] = 2
    nodes: int = Field(4, ge=1, le=8)
    cells: int = Field(8, ge=1, le=64)
    channels: int = Field(16, ge=2, le=1024)
    reductions: list[int] | None = None  # cell indices; default cells//3 and 2*cells//3 (official)
    reduction_cell: Literal["searched", "residual"] = "searched"  # NB201 uses residual blocks
    output: Literal["concat", "last"] = "concat"  # DARTS concatenates the nodes, NB201 the last
    genotype_edges: int | Literal["all"] = 2  # incoming edges kept per node when deriving
    stem: DartsStem = DartsStem()
    resolution: int = Field(32, ge=4, le=1024)
    input_channels: int = Field(3, ge=1, le=16)
    num_classes: int = Field(10, ge=2)

    @field_validator("ops")
    @classmethod
    def _ops(cls, v: str | list[str]) -> str | list[str]:
        names = OP_SETS.get(v) if isinstance(v, str) else v
        if names is None:
            raise ValueError(f"unknown op set {v!r} (known: {', '.join(sorted(OP_SETS))}; or a list of ops)")
        if not names:
            raise ValueError("ops must not be empty")
        for n in names:
            if n not in OPS:
                raise ValueError(f"unknown op {n!r} (known: {', '.join(sorted(OPS))})")
        if len(set(names)) != len(names):
            raise ValueError(f"ops has duplicates: {names}")
        return v

    @field_validator("genotype_edges")
    @classmethod
    def _gedges(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("genotype_edges must be >= 1 or 'all'")
        return v

    @model_validator(mode="after")
    def _shape(self) -> "DartsCellConfig":
        red = self.reduction_positions()
        for r in red:
            if not 0 <= r < self.cells:
                raise ValueError(f"reductions: cell index {r} is outside 0..{self.cells - 1}")
        if len(set(red)) != len(red):
            raise ValueError(f"reductions has duplicates: {red}")
        size = self.resolution // self.stem.stride
        if self.resolution % self.stem.stride:
            raise ValueError(f"resolution {self.resolution} is not divisible by the stem stride")
        if size % (2 ** len(red)):
            raise ValueError(f"resolution {self.resolution} must be divisible by 2^{len(red)} "
                             f"(stem stride and {len(red)} reduction cells)")
        if self.channels % 2:
            raise ValueError(f"channels must be even (factorized reduce halves them), got {self.channels}")
        return self

    def reduction_positions(self) -> list[int]:
        if self.reductions is not None:
            return sorted(self.reductions)
        if self.cells < 3:
            return []
        return [self.cells // 3, 2 * self.cells // 3]

    def op_names(self) -> list[str]:
        return list(OP_SETS[self.ops]) if isinstance(self.ops, str) else list(self.ops)


# -- genotypes ---------------------------------------------------------------------------
Genotype = dict[str, Any]  # {"normal": [[[op, src], ...] per node], "reduce": [...] | None}


@dataclass(frozen=True)
class CellPlan:
    """One cell of a concrete network."""

    index: int
    reduction: bool
    kind: str  # "normal", "reduce" (searched reduction) or "residual" (NB201 block)
    c_in: tuple[int, ...]  # channels of the cell inputs (before preprocessing)
    c: int  # channels of every node
    c_out: int
    size_in: int  # spatial size of the last input
    reduction_prev: bool  # the first input is twice the size of the second (DARTS)


@FAMILIES.register("darts_cell")
class DartsSpace(SearchSpace):
    Config = DartsCellConfig
    config: DartsCellConfig

    # -- structure ---------------------------------------------------------------------
    @property
    def op_names(self) -> list[str]:
        return self.config.op_names()

    def edges(self) -> list[tuple[int, int]]:
        """(node j, source i) for every edge of a cell, node by node (sources: inputs first)."""
        c = self.config
        return [(j, i) for j in range(c.nodes) for i in range(c.cell_inputs + j)]

    def cell_types(self) -> list[str]:
        """The searched cell types: ``normal`` and (if any searched reduction) ``reduce``."""
        c = self.config
        types = ["normal"]
        if c.reduction_positions() and c.reduction_cell == "searched":
            types.append("reduce")
        return types

    @staticmethod
    def edge_name(cell_type: str, j: int, i: int) -> str:
        return f"{cell_type[0]}{j}_{i}"

    def build_params(self) -> list[Param]:
        ops = tuple(self.op_names)
        return [Param(self.edge_name(t, j, i), ops) for t in self.cell_types() for j, i in self.edges()]

    def active(self, values: Mapping[str, Value]) -> set[str]:
        return {p.name for p in self._params}

    def count(self) -> int:
        return len(self.op_names) ** len(self._params)

    def resolutions(self) -> list[int]:
        return [self.config.resolution]

    def resolution(self, arch: Arch) -> int:
        return self.config.resolution

    def _op_rank(self, name: str) -> tuple[int, int]:
        macs, params = OPS[name].costs(self.config.channels, 1, self.config.resolution)
        return params, macs

    def max_arch(self) -> Arch:
        """Every edge with the op of most parameters (then MACs)."""
        best = max(self.op_names, key=lambda n: (self._op_rank(n), -self.op_names.index(n)))
        return self.arch({p.name: best for p in self._params})

    def min_arch(self) -> Arch:
        """Every edge with the cheapest op (``none`` if the set has it)."""
        lo = min(self.op_names, key=lambda n: (self._op_rank(n), n != "none", self.op_names.index(n)))
        return self.arch({p.name: lo for p in self._params})

    def plan(self) -> list[CellPlan]:
        """Cells with their channels and sizes (the same for every arch)."""
        c = self.config
        red = set(c.reduction_positions())
        size = c.resolution // c.stem.stride
        c_stem = c.stem.multiplier * c.channels
        ch = c.channels
        cells = []
        prev = [c_stem] * c.cell_inputs
        reduction_prev = False
        for k in range(c.cells):
            reduction = k in red
            if reduction:
                ch *= 2
            kind = "normal"
            if reduction:
                kind = "reduce" if c.reduction_cell == "searched" else "residual"
            n_out = c.nodes if c.output == "concat" else 1
            c_out = ch if kind == "residual" else ch * n_out
            cells.append(CellPlan(k, reduction, kind, tuple(prev), ch, c_out, size, reduction_prev))
            prev = (prev + [c_out])[-c.cell_inputs:]
            reduction_prev = reduction
            if reduction:
                size //= 2
        return cells

    def final_channels(self) -> int:
        return self.plan()[-1].c_out

    # -- genotypes ------------------------------------------------------------------
    def genotype_of(self, arch: Arch) -> Genotype:
        """The genotype of a single-path arch: every edge whose op is not ``none``."""
        geno: Genotype = {"normal": None, "reduce": None}
        for t in self.cell_types():
            geno[t] = [[[str(arch[self.edge_name(t, j, i)]), i] for i in range(self.config.cell_inputs + j)
                        if arch[self.edge_name(t, j, i)] != "none"] for j in range(self.config.nodes)]
        return geno

    def check_genotype(self, geno: Any, source: Any = None) -> Genotype:
        """Validate a genotype (from a file or a dict) against this space."""
        c = self.config
        if not isinstance(geno, Mapping):
            raise UserError("a genotype must be a mapping with 'normal' (and 'reduce')", source, "genotype")
        out: Genotype = {"normal": None, "reduce": None}
        extra = sorted(set(geno) - {"normal", "reduce", "normal_concat", "reduce_concat", "space", "epoch"})
        if extra:
            raise UserError("unknown key", source, f"genotype.{extra[0]}")
        for t in self.cell_types():
            nodes = geno.get(t)
            if not isinstance(nodes, list) or len(nodes) != c.nodes:
                raise UserError(f"must be a list of {c.nodes} nodes, each a list of [op, source] edges",
                                source, f"genotype.{t}")
            cell = []
            for j, node in enumerate(nodes):
                if not isinstance(node, list):
                    raise UserError("must be a list of [op, source] edges", source, f"genotype.{t}.{j}")
                edges = []
                for e, edge in enumerate(node):
                    where = f"genotype.{t}.{j}.{e}"
                    if (not isinstance(edge, (list, tuple)) or len(edge) != 2 or not isinstance(edge[0], str)
                            or isinstance(edge[1], bool) or not isinstance(edge[1], int)):
                        raise UserError("an edge must be [op name, source index]", source, where)
                    op, src = edge
                    if op not in self.op_names or op == "none":
                        raise UserError(f"op {op!r} is not in this space's ops (none excluded): "
                                        f"{self.op_names}", source, where)
                    if not 0 <= src < c.cell_inputs + j:
                        raise UserError(f"source {src} must be in 0..{c.cell_inputs + j - 1}", source, where)
                    edges.append([op, int(src)])
                cell.append(edges)
            out[t] = cell
        return out

    # -- analytic costs ----------------------------------------------------------------
    def _cell_costs(self, cp: CellPlan, cell_edges: list[list[list[Any]]] | None) -> tuple[int, int]:
        c = self.config
        macs = params = 0
        size = cp.size_in
        if cp.kind == "residual":  # NB201 ResNet basic block, stride 2
            o = _out(size, 2)
            for a, b in (relu_conv_bn_costs(cp.c_in[-1], cp.c, 3, o), relu_conv_bn_costs(cp.c, cp.c, 3, o),
                         (cp.c_in[-1] * cp.c * o * o, cp.c_in[-1] * cp.c)):
                macs, params = macs + a, params + b
            return macs, params
        # preprocessing of the inputs to cp.c channels
        if c.cell_inputs == 2:
            if cp.reduction_prev:
                a, b = factorized_reduce_costs(cp.c_in[0], cp.c, 2 * size)
            else:
                a, b = relu_conv_bn_costs(cp.c_in[0], cp.c, 1, size)
            macs, params = macs + a, params + b
            a, b = relu_conv_bn_costs(cp.c_in[1], cp.c, 1, size)
            macs, params = macs + a, params + b
        elif cp.c_in[0] != cp.c:
            a, b = relu_conv_bn_costs(cp.c_in[0], cp.c, 1, size)
            macs, params = macs + a, params + b
        assert cell_edges is not None
        for j, node in enumerate(cell_edges):
            for op, src in node:
                stride = 2 if cp.reduction and src < c.cell_inputs else 1
                size_src = size if src < c.cell_inputs or not cp.reduction else _out(size, 2)
                a, b = OPS[op].costs(cp.c, stride, size_src)
                macs, params = macs + a, params + b
        return macs, params

    def genotype_stage_costs(self, geno: Genotype, auxiliary: bool = False) -> list[tuple[int, int]]:
        """(MACs, params) of the stem, each cell and the classifier for a genotype."""
        c = self.config
        s = c.resolution // c.stem.stride
        cs = c.stem.multiplier * c.channels
        k = c.stem.kernel
        costs = [(s * s * k * k * c.input_channels * cs, k * k * c.input_channels * cs + 2 * cs)]
        for cp in self.plan():
            costs.append(self._cell_costs(cp, geno.get(cp.kind)))
        cf = self.final_channels()
        head_params = cf * c.num_classes + c.num_classes
        if c.output == "last":  # NB201: BN + ReLU before the pooling
            head_params += 2 * cf
        costs.append((cf * c.num_classes, head_params))
        if auxiliary:
            costs.append(auxiliary_head_costs(self.aux_channels(), c.num_classes))
        return costs

    def aux_cell(self) -> int:
        """The cell after which DARTS' auxiliary head reads (official: cell 2*cells//3)."""
        return 2 * self.config.cells // 3

    def aux_channels(self) -> tuple[int, int]:
        """(channels, spatial size) of the auxiliary head's input: the output of :meth:`aux_cell`."""
        cp = self.plan()[self.aux_cell()]
        return cp.c_out, cp.size_in // (2 if cp.reduction else 1)

    def stage_costs(self, arch: Arch) -> list[tuple[int, int]]:
        return self.genotype_stage_costs(self.genotype_of(arch))

    def macs(self, arch: Arch) -> int:
        return sum(m for m, _ in self.stage_costs(arch))

    def num_params(self, arch: Arch) -> int:
        return sum(p for _, p in self.stage_costs(arch))

    def genotype_macs(self, geno: Genotype) -> int:
        return sum(m for m, _ in self.genotype_stage_costs(geno))

    def genotype_params(self, geno: Genotype, auxiliary: bool = False) -> int:
        return sum(p for _, p in self.genotype_stage_costs(geno, auxiliary))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(ops=self.op_names, edges_per_cell=len(self.edges()), cell_types=self.cell_types(),
                 reductions=self.config.reduction_positions(), auxiliary_after=self.aux_cell(),
                 log10_archs=round(len(self._params) * math.log10(len(self.op_names)), 2))
        return d


def auxiliary_head_costs(cf_size: tuple[int, int], classes: int) -> tuple[int, int]:
    """DARTS' auxiliary head (training only): ReLU, AvgPool2d(5, stride 3) -- an 8x8 map
    pooled to 2x2 --, 1x1 conv 128 + BN, ReLU, 2x2 conv 768 + BN, ReLU, linear (MACs of the
    convs and the linear on the 2x2 pooled map; the ``adaptive`` pool option has the same)."""
    c, _ = cf_size
    macs = 4 * c * 128 + 128 * 768 * 4 + 768 * classes
    params = c * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * classes + classes
    return macs, params
