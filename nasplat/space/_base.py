"""The family-independent part of a search space.

A family subclasses :class:`SearchSpace`, declares its pydantic config model and
implements ``params`` (the categorical choices), ``active`` (which choices matter
for an arch), and the analytic cost model. Sampling, canonical form, encoding,
mutation and crossover live here once for all families.
"""
from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import UserError
from ..registry import Registry
from ._arch import Arch, Value


class SpaceConfig(BaseModel):
    """Fields every family shares; families extend it. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: str
    name: str = "space"
    input_channels: int = 3
    num_classes: int = 10


@dataclass(frozen=True)
class Param:
    """One categorical choice of the space."""

    name: str
    choices: tuple[Value, ...]


class SearchSpace(ABC):
    family: ClassVar[str]
    Config: ClassVar[type[SpaceConfig]]

    def __init__(self, config: SpaceConfig, source: str | Path | None = None):
        self.config = config
        self.source = str(source) if source is not None else None
        self._params: list[Param] = self.build_params()
        self._index = {p.name: i for i, p in enumerate(self._params)}

    # -- what a family implements ------------------------------------------------
    @abstractmethod
    def build_params(self) -> list[Param]:
        """The ordered list of categorical choices."""

    @abstractmethod
    def active(self, values: Mapping[str, Value]) -> set[str]:
        """Names of the choices that change the network for these values."""

    @abstractmethod
    def macs(self, arch: Arch) -> int:
        """Multiply-accumulates of one forward pass (batch 1), conv + linear + matmul."""

    @abstractmethod
    def num_params(self, arch: Arch) -> int:
        """Parameters of the extracted static network."""

    @abstractmethod
    def count(self) -> int:
        """Number of distinct networks in the space (all resolutions)."""

    def resolution(self, arch: Arch) -> int:
        return int(arch.get("r", self.resolutions()[-1]))

    def resolutions(self) -> list[int]:
        return list(getattr(self.config, "resolutions", [32]))

    def stage_costs(self, arch: Arch) -> list[tuple[int, int]]:
        """Per-stage (MACs, params), used as predictor features; default: whole net."""
        return [(self.macs(arch), self.num_params(arch))]

    # -- generic -----------------------------------------------------------------
    @property
    def params(self) -> list[Param]:
        return list(self._params)

    def param(self, name: str) -> Param:
        return self._params[self._index[name]]

    def hash(self) -> str:
        """Hash of the resolved config: checkpoints and predictors record it."""
        text = json.dumps(self.config.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def arch(self, values: Mapping[str, Any], source: str | None = None) -> Arch:
        """Validate ``values`` against the space and return the canonical Arch."""
        where = source or self.source
        unknown = sorted(set(values) - set(self._index))
        if unknown:
            raise UserError(f"choice {unknown[0]!r} is not in space {self.config.name!r}", where, "arch")
        full: dict[str, Value] = {}
        for p in self._params:
            if p.name in values:
                v = values[p.name]
                if v not in p.choices:
                    raise UserError(
                        f"{v!r} is not one of {list(p.choices)}", where, f"arch.{p.name}"
                    )
                full[p.name] = p.choices[p.choices.index(v)]  # 4.0 -> 4: one id per network
            else:
                full[p.name] = p.choices[0]
        act = self.active(full)
        missing = sorted(n for n in act if n not in values)
        if missing:
            raise UserError(f"arch does not set choice {missing[0]!r}", where, "arch")
        return Arch({n: (v if n in act else self.param(n).choices[0]) for n, v in full.items()})

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.arch({p.name: p.choices[rng.integers(len(p.choices))] for p in self._params})

    def max_arch(self) -> Arch:
        return self.arch({p.name: max(p.choices) for p in self._params})  # type: ignore[type-var]

    def min_arch(self) -> Arch:
        return self.arch({p.name: min(p.choices) for p in self._params})  # type: ignore[type-var]

    def encode(self, arch: Arch) -> np.ndarray:
        """Arch -> vector of choice indices (one per param)."""
        return np.array([p.choices.index(arch[p.name]) for p in self._params], dtype=np.int64)

    def decode(self, vector: Sequence[int]) -> Arch:
        if len(vector) != len(self._params):
            raise ValueError(f"vector has {len(vector)} entries, space has {len(self._params)}")
        return self.arch({p.name: p.choices[int(i)] for p, i in zip(self._params, vector)})

    def one_hot(self, arch: Arch) -> np.ndarray:
        """One-hot of every choice (inactive choices all zero): a predictor feature."""
        act = self.active(arch)
        out = []
        for p in self._params:
            row = np.zeros(len(p.choices), dtype=np.float32)
            if p.name in act:
                row[p.choices.index(arch[p.name])] = 1.0
            out.append(row)
        return np.concatenate(out)

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.1) -> Arch:
        values = dict(arch)
        for p in self._params:
            if rng.random() < prob:
                values[p.name] = p.choices[rng.integers(len(p.choices))]
        return self.arch(values)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        return self.arch({p.name: (a if rng.random() < 0.5 else b)[p.name] for p in self._params})

    def describe(self) -> dict[str, Any]:
        lo, hi = self.min_arch(), self.max_arch()
        count = self.count()
        return {
            "family": self.family,
            "name": self.config.name,
            "archs": count,
            "archs_per_resolution": count // max(1, len(self.resolutions())),
            "resolutions": self.resolutions(),
            "macs_min": self.macs(lo),
            "macs_max": self.macs(hi),
            "params_min": self.num_params(lo),
            "params_max": self.num_params(hi),
        }


FAMILIES: Registry[type[SearchSpace]] = Registry("space family", name_attr="family")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet channel rounding (as in OFA / timm)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a 'same'-padded conv (padding kernel // 2)."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def log10(n: int) -> float:
    return math.log10(n) if n > 0 else float("-inf")
