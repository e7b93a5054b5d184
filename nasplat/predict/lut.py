"""``lut``: a per-block latency lookup table built on the device — the builder that
OFA lacks (OFA ships tables for its own devices only).

Every distinct *unit* of the space (stem + first block, one MBConv block, the head),
keyed by its configuration and input shape, is exported on its own and measured with
the profile's protocol. A network's latency is ``scale * Σ units + overhead``, with
``scale`` and ``overhead`` fitted by least squares on whole-network measurements
(OFA's tables use the plain sum; the fitted terms absorb per-session overhead and the
fusion effects the isolated blocks miss — ``scale`` is kept because isolated blocks
run with cold caches between them, which is not a constant offset).

Units come from a family hook in ``LUT_FAMILIES`` (``mbv3`` here), so a new family adds
one function. INT8 profiles quantise each unit with Gaussian calibration inputs:
latency does not depend on the calibration ranges.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from ..registry import Registry
from ..space import Arch, SearchSpace

# family -> (space) -> UnitSet
LUT_FAMILIES: Registry[Callable[[SearchSpace], "UnitSet"]] = Registry("lut family")


class UnitSet(ABC):
    """How a family splits an arch into independently measurable units."""

    @abstractmethod
    def units(self, arch: Arch) -> list[str]:
        """The unit keys of ``arch``'s network, one per unit, in order."""

    @abstractmethod
    def all_units(self) -> list[str]:
        """Every distinct unit key of the space (what the table must measure)."""

    @abstractmethod
    def build(self, key: str):
        """The unit as ``(nn.Module, input shape without batch)`` for measurement."""


class _MBV3Units(UnitSet):
    def __init__(self, space):
        self.space = space
        self._specs: dict[str, Any] = {}

    def _plan_units(self, arch: Arch) -> list[str]:
        c = self.space.config
        plan = self.space.plan(arch)
        r = int(arch["r"])
        keys = [f"stem:r{r}"]
        self._specs[keys[0]] = ("stem", r, plan[0][0])
        for blocks in plan[1:]:
            for b in blocks:
                k = (f"mb:cin{b.cin}-mid{b.mid}-cout{b.cout}-k{b.kernel}-s{b.stride}-se{b.se}-{b.act}"
                     f"-res{int(b.residual)}-in{b.size_in}")
                self._specs[k] = ("block", b)
                keys.append(k)
        last = plan[-1][-1]
        size = (last.size_in + 2 * (last.kernel // 2) - last.kernel) // last.stride + 1
        hk = f"head:cin{c.stages[-1].width}-in{size}"
        self._specs[hk] = ("head", size)
        keys.append(hk)
        return keys

    def units(self, arch: Arch) -> list[str]:
        return self._plan_units(arch)

    def all_units(self) -> list[str]:
        sp = self.space
        seen: dict[str, None] = {}
        for r in sp.config.resolutions:
            for s_i, s in enumerate(sp.config.stages):
                pass
            ks = sorted({k for s in sp.config.stages for k in s.kernels})
            es = sorted({e for s in sp.config.stages for e in s.expands})
            for k in ks:
                for e in es:
                    values = {"r": r}
                    for i, s in enumerate(sp.config.stages):
                        values[f"d{i}"] = max(s.depths)
                        for j in range(max(s.depths)):
                            values[f"k{i}_{j}"] = k if k in s.kernels else s.kernels[0]
                            values[f"e{i}_{j}"] = e if e in s.expands else s.expands[0]
                    for key in self._plan_units(sp.arch(values)):
                        seen.setdefault(key, None)
        return list(seen)

    def build(self, key: str):
        from torch import nn

        from ..supernet.mbv3 import Head, MBConv, conv_bn_act

        if key not in self._specs:
            raise KeyError(key)
        spec = self._specs[key]
        c = self.space.config
        if spec[0] == "stem":
            _, r, first = spec
            m = nn.Sequential(conv_bn_act(c.input_channels, c.stem.width, 3, c.stem.stride, c.stem.act), MBConv(first))
            return m, [c.input_channels, r, r]
        if spec[0] == "block":
            b = spec[1]
            return MBConv(b), [b.cin, b.size_in, b.size_in]
        size = spec[1]
        h = c.head
        cin = c.stages[-1].width
        return Head(cin, h.final_expand, h.feature_mix, c.num_classes, h.dropout), [cin, size, size]


@LUT_FAMILIES.register("mbv3")
def _mbv3(space: SearchSpace) -> UnitSet:
    return _MBV3Units(space)


def unit_set(space: SearchSpace) -> UnitSet:
    if space.family not in LUT_FAMILIES:
        raise UserError(f"the lut predictor does not support family {space.family!r} yet "
                        f"(supported: {', '.join(LUT_FAMILIES.names())}); use latency: learned",
                        None, "predictor.latency")
    return LUT_FAMILIES.get(space.family)(space)


def measure_units(space: SearchSpace, profile, keys: Sequence[str] | None = None, protocol=None,
                  address: str | None = None, chunk: int = 16,
                  progress: Callable[[int], None] | None = None, statistic: str = "profile") -> dict[str, float]:
    """Export and time every unit (all of the space's by default) on ``profile``;
    ``statistic``: the profile's (``latency_ms``) or one recomputed from the raw samples."""
    from ..hw.stage import latency_target

    from ..hw.measure import export_model, measure_models

    us = unit_set(space)
    allk = us.all_units()
    keys = list(keys) if keys is not None else allk
    table: dict[str, float] = {}
    for s in range(0, len(keys), chunk):
        models = []
        for k in keys[s:s + chunk]:
            module, shape = us.build(k)
            shape = [profile.batch_size, *shape]
            models.append({"arch_id": k, "data": export_model(module, shape, profile), "input_shape": shape})
        rows = measure_models(models, profile, protocol, address)
        for row, v in zip(rows, latency_target(rows, statistic)):
            table[row["arch_id"]] = float(v)
        if progress is not None:
            progress(len(models))
    return table


class LUTPredictor:
    """Σ of per-unit latencies from ``table`` (key -> ms), times a fitted ``scale`` plus a
    fitted ``overhead`` (``fit_overhead=False``: the plain OFA sum)."""

    kind = "lut"

    def __init__(self, space: SearchSpace, table: dict[str, float], fit_overhead: bool = True):
        self.space = space
        self.table = dict(table)
        self.fit_overhead = fit_overhead
        self._units = unit_set(space)
        self.scale_, self.overhead_ = 1.0, 0.0

    def get_params(self) -> dict[str, Any]:
        return {"fit_overhead": self.fit_overhead}

    def block_sum(self, archs: Sequence[Arch]) -> np.ndarray:
        out = np.zeros(len(archs))
        for i, a in enumerate(archs):
            keys = self._units.units(a)
            missing = [k for k in keys if k not in self.table]
            if missing:
                raise UserError(f"arch {a.id} needs unit {missing[0]!r}, which the table lacks", None,
                                "predictor.lut")
            out[i] = sum(self.table[k] for k in keys)
        return out

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "LUTPredictor":
        s = self.block_sum(archs)
        y = np.asarray(y, dtype=np.float64)
        if self.fit_overhead and len(archs) >= 2:
            A = np.stack([s, np.ones_like(s)], 1)
            (self.scale_, self.overhead_), *_ = np.linalg.lstsq(A, y, rcond=None)
        else:
            self.scale_, self.overhead_ = 1.0, 0.0
        self.scale_, self.overhead_ = float(self.scale_), float(self.overhead_)
        return self

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.scale_ * self.block_sum(archs) + self.overhead_
