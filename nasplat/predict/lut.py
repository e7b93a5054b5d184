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

Prediction is vectorised: a family's units are laid out in *slots* (the stem, block j
of stage i, the head), each decided by a few choices (resolution, kernel, expand) and
present when its gate choice is active, so the table becomes one dense array per slot
and a batch of index rows is a sum of lookups.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from ..io import write_json
from ..registry import Registry
from ..space import Arch, SearchSpace
from ..ui import progress_bar, say
from ._base import PREDICTORS, Predictor

# family -> (space) -> UnitSet
LUT_FAMILIES: Registry[Callable[[SearchSpace], "UnitSet"]] = Registry("lut family")


@dataclass(frozen=True)
class Slot:
    """One position of the network: its unit key as a function of the choices in
    ``params`` (indices into ``space.params``), present when choice ``gate`` is active
    (None: always)."""

    params: tuple[int, ...]
    gate: int | None
    keys: dict[tuple[int, ...], str]  # choice indices of ``params`` -> unit key


class UnitSet(ABC):
    """How a family splits an arch into independently measurable units."""

    @abstractmethod
    def slots(self) -> list[Slot]:
        """The network's positions, for vectorised sums (see :class:`Slot`)."""

    @abstractmethod
    def units(self, arch: Arch) -> list[str]:
        """The unit keys of ``arch``'s network, one per unit, in order."""

    @abstractmethod
    def all_units(self) -> list[str]:
        return list(dict.fromkeys(k for slot in self.slots() for k in slot.keys.values()))

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

    def slots(self) -> list[Slot]:
        sp = self.space
        c = sp.config
        idx = {p.name: i for i, p in enumerate(sp.params)}
        stem: dict[tuple[int, ...], str] = {}
        head: dict[tuple[int, ...], str] = {}
        blocks: dict[tuple[int, int], dict[tuple[int, ...], str]] = {}
        for ri, r in enumerate(c.resolutions):
            for i, s in enumerate(c.stages):
                for ki, k in enumerate(s.kernels):
                    for ei, e in enumerate(s.expands):
                        values: dict[str, Any] = {"r": r}
                        for i2, s2 in enumerate(c.stages):
                            values[f"d{i2}"] = max(s2.depths)
                            for j in range(max(s2.depths)):
                                values[f"k{i2}_{j}"] = k if i2 == i else s2.kernels[0]
                                values[f"e{i2}_{j}"] = e if i2 == i else s2.expands[0]
                        keys = self._plan_units(sp.arch(values))
                        stem[(ri,)], head[(ri,)] = keys[0], keys[-1]
                        first = 1 + sum(max(s2.depths) for s2 in c.stages[:i])
                        for j in range(max(s.depths)):
                            blocks.setdefault((i, j), {})[(ri, ki, ei)] = keys[first + j]
        out = [Slot((idx["r"],), None, stem)]
        for (i, j), keys in blocks.items():
            out.append(Slot((idx["r"], idx[f"k{i}_{j}"], idx[f"e{i}_{j}"]), idx[f"k{i}_{j}"], keys))
        out.append(Slot((idx["r"],), None, head))
        return out

    def all_units(self) -> list[str]:
        sp = self.space
        seen: dict[str, None] = {}
        for r in sp.config.resolutions:
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


@PREDICTORS.register("lut")
class LUTPredictor(Predictor):
    """Σ of per-unit latencies from ``table`` (key -> ms), times a fitted ``scale`` plus a
    fitted ``overhead`` (``fit_overhead=False``: the plain OFA sum)."""

    def __init__(self, space: SearchSpace, table: dict[str, float], fit_overhead: bool = True):
        self.space = space
        self.table = dict(table)
        self.fit_overhead = fit_overhead

    def get_params(self) -> dict[str, Any]:
        return {"fit_overhead": self.fit_overhead}

    def _slot_tables(self) -> list[tuple[Slot, np.ndarray]]:
        """Every slot's dense table (NaN where the table lacks the unit), built once."""
        if getattr(self, "_dense", None) is None:
            sizes = [len(p.choices) for p in self.space.params]
            dense = []
            for slot in unit_set(self.space).slots():
                arr = np.full([sizes[j] for j in slot.params], np.nan)
                for at, key in slot.keys.items():
                    arr[at] = self.table.get(key, np.nan)
                dense.append((slot, arr))
            self._dense = dense
        return self._dense

    def block_sum(self, codes: np.ndarray) -> np.ndarray:
        """Σ of the table's units for every index row."""
        codes = np.asarray(codes, dtype=np.int64)
        mask = self.space.active_mask(codes)
        total = np.zeros(len(codes))
        for slot, arr in self._slot_tables():
            v = arr[tuple(codes[:, j] for j in slot.params)]
            present = mask[:, slot.gate] if slot.gate is not None else np.ones(len(codes), dtype=bool)
            bad = present & np.isnan(v)
            if bad.any():
                arch = self.space.decode(codes[int(np.flatnonzero(bad)[0])])
                missing = [k for k in unit_set(self.space).units(arch) if k not in self.table]
                raise UserError(f"arch {arch.id} needs unit {missing[0]!r}, which the table lacks", None,
                                "predictor.lut")
            total += np.where(present, v, 0.0)
        return total

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> LUTPredictor:
        s = self.block_sum(self.space.encode_batch(list(archs)))
        y = np.asarray(y, dtype=np.float64)
        scale, overhead = 1.0, 0.0
        if self.fit_overhead and len(archs) >= 2:
            A = np.stack([s, np.ones_like(s)], 1)
            (scale, overhead), *_ = np.linalg.lstsq(A, y, rcond=None)
        self.scale_, self.overhead_ = float(scale), float(overhead)
        return self

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted("scale_", "overhead_")
        return self.scale_ * self.block_sum(codes) + self.overhead_

    def save_state(self, folder: Path) -> dict[str, Any]:
        self._check_fitted("scale_", "overhead_")
        write_json(folder / "lut.json", {"table": self.table})
        return {"scale": self.scale_, "overhead": self.overhead_}

    @classmethod
    def load_state(cls, space: SearchSpace, params: dict[str, Any], folder: Path,
                   meta: dict[str, Any]) -> LUTPredictor:
        path = folder / "lut.json"
        if not path.is_file():
            raise UserError("a lut predictor needs its table (lut.json)", path)
        try:
            pred = cls(space, json.loads(path.read_text())["table"], **params)
            pred.scale_, pred.overhead_ = float(meta["scale"]), float(meta["overhead"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"damaged lut predictor ({type(e).__name__}: {e})", folder) from None
        return pred

    @classmethod
    def inputs(cls, exp: Any, profile: Any, statistic: str, address: str | None, quiet: bool,
               options: dict[str, Any]) -> dict[str, Any]:
        return {"table": experiment_lut(exp, profile, statistic, address, quiet)}


def lut_table(space: SearchSpace, profile, cache: Path, protocol=None, address: str | None = None,
              quiet: bool = False, statistic: str = "profile") -> dict[str, float]:
    """Per-unit latencies for the whole space, measured once and cached in ``cache``
    (JSON, rewritten after every chunk, so an interrupted build resumes)."""
    table: dict[str, float] = json.loads(cache.read_text())["table"] if cache.is_file() else {}
    keys = [k for k in unit_set(space).all_units() if k not in table]
    if keys:
        say(f"lut: measuring {len(keys)} blocks on {profile.name}", not quiet)
        with progress_bar(f"lut {profile.name}", len(keys), not quiet) as bar:
            for s in range(0, len(keys), 16):
                table.update(measure_units(space, profile, keys[s:s + 16], protocol, address, statistic=statistic))
                write_json(cache, {"profile": profile.name, "space_hash": space.hash(), "table": table})
                bar.advance(len(keys[s:s + 16]))
    return table


def experiment_lut(exp, profile, statistic: str = "profile", address: str | None = None,
                   quiet: bool = False) -> dict[str, float]:
    """The experiment's lut table for ``profile`` and ``statistic``, each statistic
    cached in its own file under the run's profile folder."""
    from ..hw.stage import profile_dir

    name = "lut_units.json" if statistic == "profile" else f"lut_units_{statistic}.json"
    return lut_table(exp.space, profile, profile_dir(exp.run_dir, profile.name) / name,
                     exp.config.profile.protocol_for(profile), address, quiet, statistic)
