"""Family ``mbv3``: the Once-for-All MobileNetV3 space.

Elastic per block: kernel and expand ratio; per stage: depth; per network: input
resolution. Widths are fixed per stage (as in OFA's w1.0 space), so only the middle
channels of each MBConv block are elastic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._arch import Arch
from ._base import FAMILIES, Param, SearchSpace, SpaceConfig, conv_out, make_divisible

Act = Literal["relu", "h_swish"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique_nonempty(v: list, what: str) -> list:
    if not v:
        raise ValueError(f"{what} must not be empty")
    if len(set(v)) != len(v):
        raise ValueError(f"{what} has duplicates: {v}")
    return sorted(v)


class StemConfig(_Strict):
    width: int = Field(16, ge=1)
    stride: Literal[1, 2] = 2
    act: Act = "h_swish"


class FirstBlockConfig(_Strict):
    """OFA's fixed first MBConv (expand 1, 3x3 depthwise, residual)."""

    width: int = Field(16, ge=1)
    act: Act = "relu"


class StageConfig(_Strict):
    width: int = Field(ge=1)
    stride: Literal[1, 2]
    depths: list[int]
    kernels: list[int]
    expands: list[float]
    se: bool = False
    act: Act = "relu"

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        v = _unique_nonempty(v, "depths")
        if v[0] < 1:
            raise ValueError(f"depth choices must be >= 1, got {v[0]}")
        if v[-1] > 16:
            raise ValueError(f"depth choices must be <= 16, got {v[-1]}")
        return v

    @field_validator("kernels")
    @classmethod
    def _kernels(cls, v: list[int]) -> list[int]:
        v = _unique_nonempty(v, "kernels")
        for k in v:
            if k < 1 or k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and positive, got {k}")
            if k > 15:
                raise ValueError(f"kernel sizes must be <= 15, got {k}")
        return v

    @field_validator("expands")
    @classmethod
    def _expands(cls, v: list[float]) -> list[float]:
        v = _unique_nonempty(v, "expands")
        if v[0] <= 0 or v[-1] > 16:
            raise ValueError(f"expand ratios must be in (0, 16], got {v}")
        return [int(e) if float(e).is_integer() else e for e in v]


class HeadConfig(_Strict):
    final_expand: int = Field(960, ge=1)
    feature_mix: int = Field(1280, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class MBV3Config(SpaceConfig):
    family: Literal["mbv3"]
    resolutions: list[int]
    stem: StemConfig = StemConfig()
    first_block: FirstBlockConfig = FirstBlockConfig()
    stages: list[StageConfig]
    head: HeadConfig = HeadConfig()
    input_channels: int = Field(3, ge=1, le=16)
    num_classes: int = Field(1000, ge=2)

    @field_validator("resolutions")
    @classmethod
    def _res(cls, v: list[int]) -> list[int]:
        v = _unique_nonempty(v, "resolutions")
        if v[0] < 8 or v[-1] > 1024:
            raise ValueError(f"resolutions must lie in [8, 1024], got {v[0]}..{v[-1]}")
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[StageConfig]) -> list[StageConfig]:
        if not v:  # a field validator, so the error names the field
            raise ValueError("stages must not be empty")
        return v


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block of a concrete network (what extract builds)."""

    cin: int
    mid: int  # 0 = no inverted bottleneck (the first block)
    cout: int
    kernel: int
    stride: int
    se: int  # SE reduced channels, 0 = no SE
    act: str
    residual: bool
    size_in: int  # spatial size of the input


@FAMILIES.register("mbv3")
class MBV3Space(SearchSpace):
    family = "mbv3"
    Config = MBV3Config
    config: MBV3Config

    # -- choices ------------------------------------------------------------------
    def build_params(self) -> list[Param]:
        c = self.config
        ps = [Param("r", tuple(c.resolutions))]
        ps += [Param(f"d{i}", tuple(s.depths)) for i, s in enumerate(c.stages)]
        for i, s in enumerate(c.stages):
            for j in range(max(s.depths)):
                gate = None if j < min(s.depths) else (f"d{i}", j)  # block j exists when depth > j
                ps.append(Param(f"k{i}_{j}", tuple(s.kernels), gate))
                ps.append(Param(f"e{i}_{j}", tuple(s.expands), gate))
        return ps

    def count(self) -> int:
        per_res = 1
        for s in self.config.stages:
            per_res *= sum((len(s.kernels) * len(s.expands)) ** d for d in s.depths)
        return per_res * len(self.config.resolutions)

    # -- the concrete network ----------------------------------------------------
    def mid_channels(self, cin: int, expand: float) -> int:
        return make_divisible(round(cin * expand), 8)

    @staticmethod
    def se_channels(mid: int) -> int:
        return make_divisible(mid // 4, 8)

    def plan(self, arch: Arch) -> list[list[BlockSpec]]:
        """Blocks per stage (stage 0 = the fixed first block) for ``arch``."""
        c = self.config
        size = conv_out(int(arch["r"]), 3, c.stem.stride)
        fb = c.first_block
        first = BlockSpec(c.stem.width, 0, fb.width, 3, 1, 0, fb.act, c.stem.width == fb.width, size)
        stages: list[list[BlockSpec]] = [[first]]
        cin = fb.width
        for i, s in enumerate(c.stages):
            blocks = []
            for j in range(int(arch[f"d{i}"])):
                stride = s.stride if j == 0 else 1
                k = int(arch[f"k{i}_{j}"])
                mid = self.mid_channels(cin, float(arch[f"e{i}_{j}"]))
                se = self.se_channels(mid) if s.se else 0
                residual = stride == 1 and cin == s.width
                blocks.append(BlockSpec(cin, mid, s.width, k, stride, se, s.act, residual, size))
                size = conv_out(size, k, stride)
                cin = s.width
            stages.append(blocks)
        return stages


    @staticmethod
    def block_costs(b: BlockSpec) -> tuple[int, int]:
        """(MACs, params) of one block; BN counted as 2 params per channel."""
        out = conv_out(b.size_in, b.kernel, b.stride)
        macs = params = 0
        c_dw = b.mid if b.mid else b.cin
        if b.mid:
            macs += b.size_in**2 * b.cin * b.mid
            params += b.cin * b.mid + 2 * b.mid
        macs += out**2 * b.kernel**2 * c_dw
        params += b.kernel**2 * c_dw + 2 * c_dw
        if b.se:
            macs += 2 * c_dw * b.se
            params += 2 * c_dw * b.se + b.se + c_dw
        macs += out**2 * c_dw * b.cout
        params += c_dw * b.cout + 2 * b.cout
        return macs, params

    def stage_costs(self, arch: Arch) -> list[tuple[int, int]]:
        """(MACs, params) of stem + first block, each stage, and the head."""
        c = self.config
        r = int(arch["r"])
        s0 = conv_out(r, 3, c.stem.stride)
        stem_macs = s0**2 * 9 * c.input_channels * c.stem.width
        stem_params = 9 * c.input_channels * c.stem.width + 2 * c.stem.width
        plan = self.plan(arch)
        costs = []
        for i, blocks in enumerate(plan):
            m = p = 0
            for b in blocks:
                bm, bp = self.block_costs(b)
                m, p = m + bm, p + bp
            if i == 0:
                m, p = m + stem_macs, p + stem_params
            costs.append((m, p))
        last = plan[-1][-1]
        size = conv_out(last.size_in, last.kernel, last.stride)
        h = c.head
        cin = c.stages[-1].width
        head_macs = size**2 * cin * h.final_expand + h.final_expand * h.feature_mix + h.feature_mix * c.num_classes
        head_params = cin * h.final_expand + 2 * h.final_expand + h.final_expand * h.feature_mix
        head_params += h.feature_mix * c.num_classes + c.num_classes
        costs.append((head_macs, head_params))
        return costs

    def stage_costs_batch(self, codes: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`stage_costs`: a block's cost depends only on the resolution,
        its stage, its position and its (kernel, expand) — the spatial size does not
        depend on the (odd) kernels — so each block is a lookup in a small table."""
        codes = self._check_codes(codes)
        stem, blocks, head = self._cost_tables()
        r = codes[:, self._index["r"]]
        mask = self.active_mask(codes)
        out = np.zeros((len(codes), len(self.config.stages) + 2, 2))
        out[:, 0] = stem[r]
        for i, s in enumerate(self.config.stages):
            for j in range(max(s.depths)):
                k, e = self._index[f"k{i}_{j}"], self._index[f"e{i}_{j}"]
                out[:, i + 1] += blocks[i][j][r, codes[:, k], codes[:, e]] * mask[:, k, None]
        out[:, -1] = head[r]
        return out

    def _cost_tables(self) -> tuple[np.ndarray, list[list[np.ndarray]], np.ndarray]:
        """(stem + first block [r], blocks[stage][j][r, k, e], head [r]) as (MACs, params)."""
        if getattr(self, "_tables", None) is None:
            c = self.config
            stem = np.zeros((len(c.resolutions), 2))
            head = np.zeros((len(c.resolutions), 2))
            blocks = [[np.zeros((len(c.resolutions), len(s.kernels), len(s.expands), 2)) for _ in range(max(s.depths))]
                      for s in c.stages]
            for ri, res in enumerate(c.resolutions):
                for ki in range(max(len(s.kernels) for s in c.stages)):
                    for ei in range(max(len(s.expands) for s in c.stages)):
                        values = {"r": res}
                        for i, s in enumerate(c.stages):
                            values[f"d{i}"] = max(s.depths)
                            for j in range(max(s.depths)):
                                values[f"k{i}_{j}"] = s.kernels[min(ki, len(s.kernels) - 1)]
                                values[f"e{i}_{j}"] = s.expands[min(ei, len(s.expands) - 1)]
                        arch = self.arch(values)
                        costs = self.stage_costs(arch)
                        stem[ri], head[ri] = costs[0], costs[-1]
                        for i, stage in enumerate(self.plan(arch)[1:]):
                            s = c.stages[i]
                            for j, b in enumerate(stage):
                                blocks[i][j][ri, min(ki, len(s.kernels) - 1), min(ei, len(s.expands) - 1)] = \
                                    self.block_costs(b)
            self._tables = (stem, blocks, head)
        return self._tables

    def macs(self, arch: Arch) -> int:
        return sum(m for m, _ in self.stage_costs(arch))

    def num_params(self, arch: Arch) -> int:
        return sum(p for _, p in self.stage_costs(arch))
