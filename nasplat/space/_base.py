"""The family-independent part of a search space.

A family subclasses :class:`SearchSpace`, declares its pydantic config model and
implements ``params`` (the choices), which choices matter for an arch (a ``gate`` on
each conditional :class:`Param`, or an ``active`` override), and the analytic cost
model. Sampling, canonical form, encoding, mutation and crossover live here once for
all families.

Encoding (what searchers and predictors work on): an arch is a vector of *choice
indices*, one per param, in ``params`` order; a numeric param whose choices ascend is
*ordinal* (its index order is the value order, so a searcher may treat it as an
integer). The canonical vector has every inactive choice at index 0, so equal networks
have equal vectors. The ``*_batch`` methods take an ``(n, len(params))`` index matrix
and answer for every row at once (numpy, no Python loop per arch where the family
provides a vectorised cost model).
"""
from __future__ import annotations

import hashlib
import json
import math
import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

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
    """One choice of the space.

    ``gate = (name, n)``: the choice matters only when the value of the earlier choice
    ``name`` exceeds ``n`` (block ``j`` of a stage exists when the stage depth is > j).
    """

    name: str
    choices: tuple[Value, ...]
    gate: tuple[str, float] | None = None

    @property
    def ordinal(self) -> bool:
        """Numeric choices in ascending order: the choice index is an ordinal integer."""
        nums = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in self.choices)
        return nums and all(a < b for a, b in zip(self.choices, self.choices[1:]))


class SearchSpace(ABC):
    family: ClassVar[str]
    Config: ClassVar[type[SpaceConfig]]

    def __init__(self, config: SpaceConfig, source: str | Path | None = None):
        self.config = config
        self.source = str(source) if source is not None else None
        self._params: list[Param] = self.build_params()
        self._index = {p.name: i for i, p in enumerate(self._params)}
        self._lookup = [{v: i for i, v in enumerate(p.choices)} for p in self._params]
        self._numeric = {j: np.asarray(p.choices, dtype=np.float64) for j, p in enumerate(self._params) if p.ordinal}
        self._token = object()  # marks the index rows this space cached on its archs
        self._offsets = np.cumsum([0] + [len(p.choices) for p in self._params])
        for p in self._params:
            if p.gate is not None and self._index.get(p.gate[0], len(self._params)) >= self._index[p.name]:
                raise ValueError(f"param {p.name!r} is gated by {p.gate[0]!r}, which must come before it")
        # families that override ``active`` are asked per arch; gated ones are vectorised
        self._custom_active = type(self).active is not SearchSpace.active

    # -- what a family implements ------------------------------------------------
    @abstractmethod
    def build_params(self) -> list[Param]:
        """The ordered list of categorical choices."""

    def active(self, values: Mapping[str, Value]) -> set[str]:
        """Names of the choices that change the network for these values (default:
        the params' gates; a family with another rule overrides this)."""
        out: set[str] = set()
        for p in self._params:
            if p.gate is None or (p.gate[0] in out and float(values[p.gate[0]]) > p.gate[1]):  # type: ignore[arg-type]
                out.add(p.name)
        return out

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
        arch = Arch({n: (v if n in act else self.param(n).choices[0]) for n, v in full.items()})
        arch._codes = (self._token, np.array([lk[arch[p.name]] for p, lk in zip(self._params, self._lookup)],
                                             dtype=np.int64))
        return arch

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.arch({p.name: p.choices[rng.integers(len(p.choices))] for p in self._params})

    def max_arch(self) -> Arch:
        return self.arch({p.name: max(p.choices) for p in self._params})  # type: ignore[type-var]

    def min_arch(self) -> Arch:
        return self.arch({p.name: min(p.choices) for p in self._params})  # type: ignore[type-var]

    def encode(self, arch: Arch) -> np.ndarray:
        """Arch -> vector of choice indices (one per param)."""
        return self.encode_batch([arch])[0]

    def encode_batch(self, archs: Sequence[Mapping[str, Value]]) -> np.ndarray:
        """Archs -> ``(n, len(params))`` int64 matrix of choice indices (numeric choices
        located by binary search, the others by lookup)."""
        if not len(archs):
            return np.zeros((0, len(self._params)), dtype=np.int64)
        cached = [getattr(a, "_codes", None) for a in archs]
        if all(c is not None and c[0] is self._token for c in cached):  # archs this space made
            return np.stack([c[1] for c in cached])  # type: ignore[index]
        get = operator.itemgetter(*[p.name for p in self._params])
        rows = [get(a._values if isinstance(a, Arch) else a) for a in archs]
        out = np.empty((len(rows), len(self._params)), dtype=np.int64)
        numeric = [j for j, p in enumerate(self._params) if p.ordinal]
        if numeric:
            vals = np.array([[r[j] for j in numeric] for r in rows], dtype=np.float64) if len(numeric) < len(rows[0]) \
                else np.array(rows, dtype=np.float64)
            for col, j in enumerate(numeric):
                table = self._numeric[j]
                idx = np.minimum(np.searchsorted(table, vals[:, col]), len(table) - 1)
                if not np.array_equal(table[idx], vals[:, col]):
                    bad = vals[np.flatnonzero(table[idx] != vals[:, col])[0], col]
                    raise KeyError(f"{bad!r} is not a choice of {self._params[j].name!r}")
                out[:, j] = idx
        for j, (p, lk) in enumerate(zip(self._params, self._lookup)):
            if not p.ordinal:
                out[:, j] = [lk[r[j]] for r in rows]
        return out

    def decode(self, vector: Sequence[int]) -> Arch:
        if len(vector) != len(self._params):
            raise ValueError(f"vector has {len(vector)} entries, space has {len(self._params)}")
        return self.arch({p.name: p.choices[int(i)] for p, i in zip(self._params, vector)})

    def decode_batch(self, codes: np.ndarray) -> list[Arch]:
        """Index rows -> canonical Archs (validated once for the whole matrix)."""
        codes = self._check_codes(codes)
        canon = self.canonical(codes)
        out = []
        for row, values in zip(canon, canon.tolist()):
            arch = Arch({p.name: p.choices[i] for p, i in zip(self._params, values)})
            arch._codes = (self._token, row)
            out.append(arch)
        return out

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != len(self._params):
            raise ValueError(f"codes must have shape (n, {len(self._params)}), got {codes.shape}")
        codes = codes.astype(np.int64, copy=False)
        sizes = np.diff(self._offsets)
        if len(codes) and ((codes < 0).any() or (codes >= sizes).any()):
            raise ValueError("a choice index is out of range")
        return codes

    def build(self, choose: Callable[[Param], int]) -> Arch:
        """Define-by-run: ``choose(param) -> index`` is called for the active choices
        only, in ``params`` order (a choice's gate is decided before it is reached)."""
        values: dict[str, Value] = {}
        for p in self._params:
            if self._is_active(p, values):
                values[p.name] = p.choices[int(choose(p))]
        return self.arch(values)

    def _is_active(self, p: Param, values: Mapping[str, Value]) -> bool:
        if self._custom_active:
            probe = {q.name: values.get(q.name, q.choices[0]) for q in self._params}
            return p.name in self.active(probe)
        return p.gate is None or (p.gate[0] in values and float(values[p.gate[0]]) > p.gate[1])  # type: ignore[arg-type]

    def active_mask(self, codes: np.ndarray) -> np.ndarray:
        """``(n, len(params))`` bool: which choices matter in each row."""
        codes = np.asarray(codes, dtype=np.int64)
        if self._custom_active:
            rows = [self.active({p.name: p.choices[i] for p, i in zip(self._params, row)}) for row in codes.tolist()]
            return np.array([[p.name in act for p in self._params] for act in rows], dtype=bool).reshape(codes.shape)
        mask = np.ones(codes.shape, dtype=bool)
        gated, gate_cols, limits, table = self._gates()
        if len(gated):
            mask[:, gated] = table[gate_cols[None, :], codes[:, gate_cols]] > limits
            for _ in range(len(gated)):  # a gate that is itself gated: propagate until stable
                inherited = mask[:, gated] & mask[:, gate_cols]
                if np.array_equal(inherited, mask[:, gated]):
                    break
                mask[:, gated] = inherited
        return mask

    def _gates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(gated param indices, their gate's index, the limits, a params x choices value table)."""
        if getattr(self, "_gate_arrays", None) is None:
            gated = [j for j, p in enumerate(self._params) if p.gate is not None]
            width = max(len(p.choices) for p in self._params)
            table = np.full((len(self._params), width), np.nan)
            for j, t in self._numeric.items():
                table[j, :len(t)] = t
            self._gate_arrays = (np.array(gated, dtype=np.int64),
                                 np.array([self._index[self._params[j].gate[0]] for j in gated], dtype=np.int64),
                                 np.array([float(self._params[j].gate[1]) for j in gated]), table)
        return self._gate_arrays

    def canonical(self, codes: np.ndarray) -> np.ndarray:
        """Index rows with every inactive choice at index 0 (one row per network)."""
        codes = np.asarray(codes, dtype=np.int64)
        return np.where(self.active_mask(codes), codes, 0)

    def one_hot(self, arch: Arch) -> np.ndarray:
        """One-hot of every choice (inactive choices all zero): a predictor feature."""
        return self.one_hot_batch(self.encode_batch([arch]))[0]

    def one_hot_batch(self, codes: np.ndarray) -> np.ndarray:
        """``(n, Σ choices)`` float32 one-hot rows; inactive choices all zero."""
        codes = np.asarray(codes, dtype=np.int64)
        out = np.zeros((len(codes), int(self._offsets[-1])), dtype=np.float32)
        rows, cols = np.nonzero(self.active_mask(codes))
        out[rows, self._offsets[cols] + codes[rows, cols]] = 1.0
        return out

    def stage_costs_batch(self, codes: np.ndarray) -> np.ndarray:
        """``(n, stages, 2)`` float64 per-stage (MACs, params) for index rows. The default
        decodes each row; families with a vectorised cost model override it."""
        codes = self._check_codes(codes)
        rows = [self.stage_costs(a) for a in self.decode_batch(codes)]
        return np.asarray(rows, dtype=np.float64).reshape(len(codes), -1, 2)

    def macs_batch(self, codes: np.ndarray) -> np.ndarray:
        """MACs of every index row."""
        return self.stage_costs_batch(codes)[:, :, 0].sum(1)

    def params_batch(self, codes: np.ndarray) -> np.ndarray:
        """Parameters of every index row."""
        return self.stage_costs_batch(codes)[:, :, 1].sum(1)

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
