"""Family ``vit_hybrid``: the ElasticViT hybrid CNN / transformer space.

Structure (ElasticViT, Tang et al. ICCV 2023; official code microsoft/Moonlit):

* stem: a 3x3 conv (``stem.stride``) to ``sw`` channels, then ``sd - 1`` residual
  depthwise-separable blocks (3x3 depthwise + 1x1) at the same width;
* stages, MBConv (``type: conv``) stages first, then transformer stages;
  a conv stage is ``d`` MBConv blocks (block 0 carries the stride and changes the
  width, with the official shortcut: identity when the shapes agree, else 2x2 average
  pooling when strided and a 1x1 projection when the widths differ; the others are
  residual) with one kernel and one expand ratio per stage;
  a transformer stage is a transition MBConv as the official one (kernel ``down_kernel``
  = 3, expand ``down_expand`` = 6 of its input width, squeeze-excite ``se`` on, the
  stage stride, the same shortcut as a conv stage's first block) followed by ``d``
  pre-norm transformer blocks on the flattened feature map as the official ones:
  x + proj(act(softmax(q·kᵀ/√head_dim)·dwconv3x3(v))) with q, k, v bias-free linear maps
  (heads = width / ``head_dim``, q/k dim per head = ``head_dim``, v dim per head =
  v_scale * head_dim), the depthwise 3x3 conv on V over the token grid and the activation
  before the output projection; then x + fc2(act(fc1(LN(x)))) (hidden = round(width *
  mlp_ratio));
* a MobileNetV3-style head: 1x1 conv to ``head.expand_ratio`` x the last width, BN,
  h-swish, global pool, 1x1 to ``head.feature_mix``, h-swish, dropout, linear.

Choices (flat ``Arch`` names): ``r`` resolution, ``sw``/``sd`` stem width/depth, and
per stage ``i``: ``w{i}`` width, ``d{i}`` depth, ``k{i}``/``e{i}`` (conv stages) or
``m{i}``/``v{i}`` (transformer stages: MLP ratio, V scale). As in the official code's
sampler these are per stage (one kernel/expand/MLP ratio/V scale for all blocks of a
stage). Every choice is always active.

Differences from the official supernet (documented, deliberate): no relative position
bias (the official attention adds a learned bias per head and token offset; the paper's
final space uses global attention, window 1, which is kept); V is nested per head (a
subnet takes the first V features *of each of its heads*, so a head keeps its V weights
when v_scale changes; the official code takes the first heads x v_dim features of one flat
V projection and of the depthwise V conv); smaller kernels come from OFA's kernel
transform (``_ops.ElasticDepthwiseConv``, identity at init = the official centre crop);
SE widths are rounded to multiples of 8 as in ``mbv3`` (official: middle / 4); the
MLP / attention use the stage's activation from the YAML (default h-swish as in the
official code); BN of a residual block's last conv starts at γ = 1 (official: 0). Middle
widths make_divisible(round(cin * expand), 8) equal the official cin * expand for the
shipped spaces (widths are multiples of 8, expands integers).

The cost model is one vectorised function over arrays of choice values, so
``macs``/``num_params`` of one arch and :meth:`VitHybridSpace.stage_costs_batch` (hence
``macs_batch``) over thousands of encoded archs are the same formula (and exact against
``torch.utils.flop_counter``: MACs = counted FLOPs / 2, attention matmuls included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, Mapping, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import UserError
from ._arch import Arch, Value
from ._base import FAMILIES, Param, SearchSpace, SpaceConfig

Act = Literal["relu", "h_swish", "gelu"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _choices(v: list, what: str, lo: float = 1, hi: float = 4096) -> list:
    if not v:
        raise ValueError(f"{what} must not be empty")
    if len(set(v)) != len(v):
        raise ValueError(f"{what} has duplicates: {v}")
    v = sorted(v)
    if v[0] < lo or v[-1] > hi:
        raise ValueError(f"{what} must lie in [{lo}, {hi}], got {v}")
    return [int(x) if float(x).is_integer() else x for x in v]


class _WidthsDepths(_Strict):
    """Width and depth choices (the stem's and every stage's)."""

    _max_depth: ClassVar[int] = 16
    widths: list[int]
    depths: list[int]

    @field_validator("widths")
    @classmethod
    def _w(cls, v: list[int]) -> list[int]:
        return _choices(v, "widths")

    @field_validator("depths")
    @classmethod
    def _d(cls, v: list[int]) -> list[int]:
        return _choices(v, "depths", 1, cls._max_depth)


class VitStemConfig(_WidthsDepths):
    _max_depth: ClassVar[int] = 8
    widths: list[int] = [16, 24]
    depths: list[int] = [1, 2]
    stride: Literal[1, 2] = 2
    act: Act = "h_swish"


class _StageConfig(_WidthsDepths):
    """What both stage types choose: width and depth, with a fixed stride."""

    stride: Literal[1, 2]
    se: bool = False
    act: Act = "h_swish"


class ConvStageConfig(_StageConfig):
    type: Literal["conv"]
    kernels: list[int] = [3, 5]
    expands: list[float] = [3, 4, 5, 6]

    @field_validator("kernels")
    @classmethod
    def _k(cls, v: list[int]) -> list[int]:
        v = _choices(v, "kernels", 1, 15)
        if any(k % 2 == 0 for k in v):
            raise ValueError(f"kernel sizes must be odd, got {v}")
        return v

    @field_validator("expands")
    @classmethod
    def _e(cls, v: list[float]) -> list[float]:
        return _choices(v, "expands", 0.5, 16)


class TransformerStageConfig(_StageConfig):
    """The transition MBConv: expand ``down_expand``, kernel ``down_kernel``, SE ``se``
    (the official block: 6, 3, on)."""

    type: Literal["transformer"]
    mlp_ratios: list[float] = [2, 3, 4, 5]
    v_scales: list[int] = [2, 3, 4]
    se: bool = True
    down_expand: float = Field(6, gt=0, le=16)
    down_kernel: int = Field(3, ge=1, le=15)

    @field_validator("mlp_ratios")
    @classmethod
    def _m(cls, v: list[float]) -> list[float]:
        return _choices(v, "mlp_ratios", 0.25, 16)

    @field_validator("v_scales")
    @classmethod
    def _v(cls, v: list[int]) -> list[int]:
        return _choices(v, "v_scales", 1, 16)

    @field_validator("down_kernel")
    @classmethod
    def _dk(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {v}")
        return v


StageConfig = Annotated[Union[ConvStageConfig, TransformerStageConfig], Field(discriminator="type")]


class VitHeadConfig(_Strict):
    expand_ratio: int = Field(6, ge=1, le=16)  # final 1x1 = expand_ratio * last width
    feature_mix: int = Field(1984, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class VitHybridConfig(SpaceConfig):
    family: Literal["vit_hybrid"]
    resolutions: list[int]
    head_dim: int = Field(16, ge=1, le=256)
    stem: VitStemConfig = VitStemConfig()
    stages: list[StageConfig]
    head: VitHeadConfig = VitHeadConfig()
    input_channels: int = Field(3, ge=1, le=16)
    num_classes: int = Field(1000, ge=2)

    @field_validator("resolutions")
    @classmethod
    def _res(cls, v: list[int]) -> list[int]:
        return _choices(v, "resolutions", 8, 1024)

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list) -> list:
        if not v:
            raise ValueError("stages must not be empty")
        return v


def make_divisible_np(v: np.ndarray, divisor: int = 8) -> np.ndarray:
    """Vectorised ``make_divisible`` (MobileNet channel rounding, as in nasplat.space)."""
    v = np.asarray(v, dtype=np.float64)
    new = np.maximum(divisor, ((v + divisor / 2) // divisor) * divisor)
    new = np.where(new < 0.9 * v, new + divisor, new)
    return new.astype(np.int64)


def conv_out_np(size, kernel, stride):
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def mid_channels(cin, expand) -> np.ndarray:
    """MBConv middle width: make_divisible(round(cin * expand), 8), vectorised."""
    return make_divisible_np(np.rint(np.asarray(cin, dtype=np.float64) * expand), 8)


def se_channels(mid) -> np.ndarray:
    return make_divisible_np(np.asarray(mid) // 4, 8)


def mbconv_costs(size, cin, mid, cout, k, stride, se: bool):
    """(MACs, params) arrays of an MBConv (mid 0 = no expand conv); BN = 2 params/channel."""
    size, cin, mid, cout, k = (np.asarray(a, dtype=np.int64) for a in (size, cin, mid, cout, k))
    out = conv_out_np(size, k, stride)
    has_mid = mid > 0
    c_dw = np.where(has_mid, mid, cin)
    macs = np.where(has_mid, size * size * cin * mid, 0)
    params = np.where(has_mid, cin * mid + 2 * mid, 0)
    macs = macs + out * out * k * k * c_dw
    params = params + k * k * c_dw + 2 * c_dw
    if se:
        r = se_channels(c_dw)
        macs = macs + 2 * c_dw * r
        params = params + 2 * c_dw * r + r + c_dw
    macs = macs + out * out * c_dw * cout
    params = params + c_dw * cout + 2 * cout
    return macs, params, out


def first_block_costs(size, cin, mid, cout, k, stride, se: bool):
    """An MBConv that may change the shape, with the official shortcut: a 1x1 projection
    (no BN) where the widths differ (the 2x2 pooling is free)."""
    m, p, out = mbconv_costs(size, cin, mid, cout, k, stride, se)
    proj = np.asarray(cin) != np.asarray(cout)
    return m + np.where(proj, out * out * cin * cout, 0), p + np.where(proj, cin * cout, 0), out


def transformer_costs(tokens, width, heads, head_dim, v_scale, hidden):
    """(MACs, params) arrays of one pre-norm transformer block (attention + MLP)."""
    n, c, h, hd = (np.asarray(a, dtype=np.int64) for a in (tokens, width, heads, head_dim))
    vd = np.asarray(v_scale, dtype=np.int64) * hd
    hid = np.asarray(hidden, dtype=np.int64)
    qk = h * hd
    macs = 2 * n * c * qk + n * c * h * vd  # q, k, v projections (no bias)
    macs = macs + n * h * vd * 9  # depthwise 3x3 conv on V
    macs = macs + h * n * n * hd + h * n * n * vd  # q @ k^T, attn @ v
    macs = macs + n * h * vd * c  # output projection
    macs = macs + 2 * n * c * hid  # MLP
    params = 2 * (2 * c)  # two layer norms
    params = params + 2 * c * qk + c * h * vd + 9 * h * vd + (h * vd * c + c)
    params = params + (c * hid + hid) + (hid * c + c)
    return macs, params


@dataclass(frozen=True)
class StagePlan:
    """One stage of a concrete network (what extract builds)."""

    type: str
    cin: int
    width: int
    depth: int
    stride: int
    size_in: int
    kernel: int = 0
    expand: float = 0.0
    mlp_ratio: float = 0.0
    v_scale: int = 0


@FAMILIES.register("vit_hybrid")
class VitHybridSpace(SearchSpace):
    Config = VitHybridConfig
    config: VitHybridConfig

    def __init__(self, config: VitHybridConfig, source=None):
        self._check(config, source)
        super().__init__(config, source)
        self._choice_tables = [np.asarray(p.choices, dtype=np.float64) for p in self._params]

    @staticmethod
    def _check(c: VitHybridConfig, source) -> None:
        seen_transformer = False
        for i, s in enumerate(c.stages):
            if isinstance(s, TransformerStageConfig):
                seen_transformer = True
                bad = [w for w in s.widths if w % c.head_dim]
                if bad:
                    raise UserError(f"transformer width {bad[0]} is not divisible by head_dim {c.head_dim} "
                                    f"(heads = width / head_dim)", source, f"stages.{i}.widths")
            elif seen_transformer:
                raise UserError("conv stages must come before transformer stages", source, f"stages.{i}.type")

    # -- choices ------------------------------------------------------------------
    def build_params(self) -> list[Param]:
        c = self.config
        ps = [Param("r", tuple(c.resolutions)), Param("sw", tuple(c.stem.widths)), Param("sd", tuple(c.stem.depths))]
        for i, s in enumerate(c.stages):
            ps += [Param(f"w{i}", tuple(s.widths)), Param(f"d{i}", tuple(s.depths))]
            if isinstance(s, ConvStageConfig):
                ps += [Param(f"k{i}", tuple(s.kernels)), Param(f"e{i}", tuple(s.expands))]
            else:
                ps += [Param(f"m{i}", tuple(s.mlp_ratios)), Param(f"v{i}", tuple(s.v_scales))]
        return ps

    def active(self, values: Mapping[str, Value]) -> set[str]:
        return {p.name for p in self._params}

    def count(self) -> int:
        n = 1
        for p in self._params:
            n *= len(p.choices)
        return n

    def transformer_stages(self) -> list[int]:
        return [i for i, s in enumerate(self.config.stages) if isinstance(s, TransformerStageConfig)]

    def width_chain(self) -> list[str]:
        """The width choices in network order (stem, then stages): ElasticViT's sampler
        never makes a stage narrower than the one before."""
        return ["sw"] + [f"w{i}" for i in range(len(self.config.stages))]

    def preference_names(self) -> tuple[list[str], list[str]]:
        """(width choices, depth choices) ElasticViT's "wider and shallower" preference
        compares: the transformer stages' widths and depths (as in the official code)."""
        t = self.transformer_stages() or list(range(len(self.config.stages)))
        return [f"w{i}" for i in t], [f"d{i}" for i in t]

    # -- the concrete network ----------------------------------------------------
    def plan(self, arch: Arch) -> list[StagePlan]:
        c = self.config
        size = int(conv_out_np(int(arch["r"]), 3, c.stem.stride))
        cin = int(arch["sw"])
        out: list[StagePlan] = []
        for i, s in enumerate(c.stages):
            w, d = int(arch[f"w{i}"]), int(arch[f"d{i}"])
            if isinstance(s, ConvStageConfig):
                k, e = int(arch[f"k{i}"]), float(arch[f"e{i}"])
                out.append(StagePlan("conv", cin, w, d, s.stride, size, kernel=k, expand=e))
                size = int(conv_out_np(size, k, s.stride))
            else:
                out.append(StagePlan("transformer", cin, w, d, s.stride, size, kernel=s.down_kernel,
                                     expand=s.down_expand, mlp_ratio=float(arch[f"m{i}"]),
                                     v_scale=int(arch[f"v{i}"])))
                size = int(conv_out_np(size, s.down_kernel, s.stride))
            cin = w
        return out

    # -- the cost model (vectorised) ---------------------------------------------
    def values_of(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """Encoded archs (n, len(params)) of choice indices -> choice values per name."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(self._params):
            raise ValueError(f"codes must have shape (n, {len(self._params)}), got {codes.shape}")
        return {p.name: t[codes[:, j]] for j, (p, t) in enumerate(zip(self._params, self._choice_tables))}

    def stage_cost_arrays(self, v: Mapping[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-stage (MACs, params) arrays: stem, each stage, head."""
        c = self.config
        i64 = lambda a: np.asarray(a).astype(np.int64)  # noqa: E731
        r, sw, sd = i64(v["r"]), i64(v["sw"]), i64(v["sd"])
        size = conv_out_np(r, 3, c.stem.stride)
        stem_m = size * size * 9 * c.input_channels * sw
        stem_p = 9 * c.input_channels * sw + 2 * sw
        bm, bp, _ = mbconv_costs(size, sw, 0, sw, 3, 1, False)
        stem_m, stem_p = stem_m + (sd - 1) * bm, stem_p + (sd - 1) * bp
        costs = [(stem_m, stem_p)]
        cin = sw
        for i, s in enumerate(c.stages):
            w, d = i64(v[f"w{i}"]), i64(v[f"d{i}"])
            if isinstance(s, ConvStageConfig):
                k, e = i64(v[f"k{i}"]), np.asarray(v[f"e{i}"], dtype=np.float64)
                m0, p0, out = first_block_costs(size, cin, mid_channels(cin, e), w, k, s.stride, s.se)
                m1, p1, _ = mbconv_costs(out, w, mid_channels(w, e), w, k, 1, s.se)
                costs.append((m0 + (d - 1) * m1, p0 + (d - 1) * p1))
            else:  # the transition MBConv, then d transformer blocks
                m0, p0, out = first_block_costs(size, cin, mid_channels(cin, s.down_expand), w, s.down_kernel,
                                                s.stride, s.se)
                mlp = np.asarray(v[f"m{i}"], dtype=np.float64)
                hidden = np.rint(w * mlp).astype(np.int64)
                m1, p1 = transformer_costs(out * out, w, w // c.head_dim, c.head_dim, i64(v[f"v{i}"]), hidden)
                costs.append((m0 + d * m1, p0 + d * p1))
            size, cin = out, w
        h = c.head
        fe = h.expand_ratio * cin
        head_m = size * size * cin * fe + fe * h.feature_mix + h.feature_mix * c.num_classes
        head_p = cin * fe + 2 * fe + fe * h.feature_mix + h.feature_mix * c.num_classes + c.num_classes
        costs.append((head_m, head_p))
        return costs

    def stage_costs_batch(self, codes: np.ndarray) -> np.ndarray:
        """``(n, stages, 2)`` per-stage (MACs, params) of many encoded archs, vectorised."""
        costs = self.stage_cost_arrays(self.values_of(codes))
        n = len(codes)
        return np.stack([np.stack([np.broadcast_to(m, (n,)), np.broadcast_to(p, (n,))], -1) for m, p in costs],
                        1).astype(np.float64)

    def _values_of_arch(self, arch: Arch) -> dict[str, np.ndarray]:
        return {p.name: np.asarray([arch[p.name]], dtype=np.float64) for p in self._params}

    def stage_costs(self, arch: Arch) -> list[tuple[int, int]]:
        """(MACs, params) of the stem, each stage and the head."""
        return [(int(m[0]) if np.ndim(m) else int(m), int(p[0]) if np.ndim(p) else int(p))
                for m, p in self.stage_cost_arrays(self._values_of_arch(arch))]

    def macs(self, arch: Arch) -> int:
        return sum(m for m, _ in self.stage_costs(arch))

    def num_params(self, arch: Arch) -> int:
        return sum(p for _, p in self.stage_costs(arch))
