"""What a search measures about an arch: objectives and constrained quantities.

A metric is named as in the experiment YAML: ``accuracy``, ``latency@<profile>``,
``macs``, ``params``. Kinds live in the :data:`METRICS` registry (a new kind is one
factory and one decorator). *Cheap* metrics are computed in the driver for a whole
batch at once, most of them vectorised over encoded archs (``batch``: an index matrix
in, one value per row out, what LINAS's inner loop calls thousands of times); *expensive*
ones (``accuracy`` through the supernet) are evaluated by the Ray evaluator pool.

Constraints are strings ``<metric> <op> <number>[unit]``, e.g.
``latency@local-cpu <= 5ms``, ``macs <= 50M``, ``accuracy >= 90%``. They become
Optuna constraint values (``Trial.set_constraint``; ``<= 0`` means feasible).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from ..registry import Registry
from ..space import Arch, SearchSpace


@dataclass
class Metric:
    name: str  # the column name, e.g. "latency@local-cpu"
    direction: str  # "maximize" | "minimize"
    unit: str = ""
    expensive: bool = False  # evaluated by the Ray evaluator pool
    compute: Callable[[Sequence[Arch]], Sequence[float]] | None = None  # cheap metrics
    scale: float = 1.0  # hypervolume normalisation (value of the max arch for costs)
    batch: Callable[[np.ndarray], np.ndarray] | None = None  # index rows -> values (vectorised)

    def loss(self, value: Any) -> Any:
        """Normalised, minimised form used for hypervolume (a value or an array)."""
        if self.direction == "maximize":
            return 1.0 - value / self.scale
        return value / self.scale


def batch_metric(name: str, direction: str, unit: str, space: SearchSpace,
                 batch: Callable[[np.ndarray], np.ndarray]) -> Metric:
    """A cheap metric computed from index rows; ``compute`` encodes archs first."""
    return Metric(name, direction, unit, batch=batch,
                  compute=lambda archs: np.asarray(batch(space.encode_batch(list(archs))), dtype=np.float64))


@dataclass
class MetricContext:
    """What metric factories may use."""

    space: SearchSpace
    file: str | None = None
    field: str = "search"
    exp: Any = None  # nasplat.experiment.Experiment, when searching an experiment
    accuracy_mode: str = "supernet"
    latency_mode: str = "predictor"
    cache: dict[str, Any] = dc_field(default_factory=dict)


METRICS: Registry[Callable[[str | None, MetricContext], Metric]] = Registry("search metric")


@METRICS.register("macs")
def _macs(arg: str | None, ctx: MetricContext) -> Metric:
    space = ctx.space
    m = batch_metric("macs", "minimize", "MACs", space, space.macs_batch)
    m.scale = float(space.macs(space.max_arch()))
    return m


@METRICS.register("params")
def _params(arg: str | None, ctx: MetricContext) -> Metric:
    space = ctx.space
    m = batch_metric("params", "minimize", "", space, space.params_batch)
    m.scale = float(space.num_params(space.max_arch()))
    return m


@METRICS.register("accuracy")
def _accuracy(arg: str | None, ctx: MetricContext) -> Metric:
    if ctx.accuracy_mode == "supernet":
        return Metric("accuracy", "maximize", "", expensive=True)
    return batch_metric("accuracy", "maximize", "", ctx.space, _load_predictor(ctx, "accuracy", None).predict_codes)


@METRICS.register("latency")
def _latency(arg: str | None, ctx: MetricContext) -> Metric:
    if not arg:
        raise UserError("latency needs a profile: latency@<profile>", ctx.file, ctx.field)
    if ctx.latency_mode == "measured":
        measure = _load_measurer(ctx, arg)
        m = Metric(f"latency@{arg}", "minimize", "ms", compute=lambda archs: [float(v) for v in measure(list(archs))])
    else:
        m = batch_metric(f"latency@{arg}", "minimize", "ms", ctx.space,
                         _load_predictor(ctx, "latency", arg).predict_codes)
    m.scale = float(m.compute([ctx.space.max_arch()])[0]) or 1.0  # type: ignore[misc]
    return m


def _load_predictor(ctx: MetricContext, what: str, profile: str | None) -> Any:
    """The fitted predictor from ``nasplat.predict`` (the run's own, else a shipped one
    for this space); its ``predict_codes`` answers index rows in one call."""
    from .. import predict as P

    run_dir = ctx.exp.run_dir if ctx.exp is not None else None
    if what == "latency":
        from ..hw.stage import experiment_profile

        prof = experiment_profile(ctx.exp, profile) if ctx.exp is not None else None
        return P.load_latency_predictor(run_dir, prof.name if prof else profile, ctx.space, prof)
    if run_dir is None:
        raise UserError("an accuracy predictor needs an experiment", ctx.file, ctx.field)
    return P.load_accuracy_predictor(run_dir, ctx.space)


def _load_measurer(ctx: MetricContext, profile: str) -> Callable[[list[Arch]], Sequence[float]]:
    """archs -> measured latency (ms) on ``profile`` through ``nasplat.hw`` (export to
    ONNX, time in onnxruntime by the profile's protocol). Slow: for small budgets."""
    if ctx.exp is None:
        raise UserError("measured latency needs an experiment", ctx.file, ctx.field)
    from ..hw.measure import measure_archs
    from ..hw.stage import experiment_profile

    prof = experiment_profile(ctx.exp, profile)
    protocol = ctx.exp.config.profile.protocol_for(prof)
    return lambda archs: [r["latency_ms"] for r in measure_archs(ctx.space, list(archs), prof, protocol=protocol)]


def make_metric(name: str, ctx: MetricContext) -> Metric:
    kind, _, arg = name.partition("@")
    try:
        return METRICS.get(kind, ctx.file, ctx.field)(arg or None, ctx)
    except UserError as e:
        if e.file is not None:
            raise
        raise UserError(e.message, ctx.file, ctx.field) from None  # name the experiment file and field


# -- constraints ------------------------------------------------------------------------

_UNITS = {
    "": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3, "%": 0.01,
}
_CONSTRAINT = re.compile(r"^\s*(?P<metric>[A-Za-z_]+(?:@[\w.:-]+)?)\s*(?P<op><=|>=|<|>)\s*"
                         r"(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[A-Za-zµ%]*)\s*$")
_UNIT_ALIASES = {"MACs": "", "MMACs": "M", "GMACs": "G", "KMACs": "k", "FLOPs": "", "MFLOPs": "M"}


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str  # "<=" or ">=" ("<" and ">" read as the same for continuous values)
    limit: float
    text: str

    def violation(self, value: float) -> float:
        """Optuna's constraint value: <= 0 when satisfied."""
        return value - self.limit if self.op == "<=" else self.limit - value

    def ok(self, value: float) -> bool:
        return self.violation(value) <= 0


def parse_constraint(text: str, file: str | None = None, field: str = "search.constraints") -> Constraint:
    m = _CONSTRAINT.match(text)
    if not m:
        raise UserError(f"cannot read constraint {text!r} (expected e.g. 'macs <= 50M' or "
                        f"'latency@local-cpu <= 5ms')", file, field)
    unit = m["unit"]
    unit = _UNIT_ALIASES.get(unit, unit)
    if unit.endswith("MACs") and unit[:-4] in _UNITS:
        unit = unit[:-4]
    if unit not in _UNITS:
        raise UserError(f"unknown unit {m['unit']!r} in constraint {text!r}", file, field)
    metric = m["metric"]
    kind = metric.partition("@")[0]
    if kind == "latency" and unit in ("k", "K", "M", "G", "T", "%"):
        raise UserError(f"latency limits take a time unit (ms, us, s), not {m['unit']!r}", file, field)
    if kind != "latency" and unit in ("ms", "us", "µs", "s"):
        raise UserError(f"{metric} does not take a time unit", file, field)
    op = "<=" if m["op"] in ("<=", "<") else ">="
    return Constraint(metric, op, float(m["num"]) * _UNITS[unit], text.strip())


def constraint_values(constraints: Sequence[Constraint], values: dict[str, float]) -> list[float]:
    return [c.violation(values[c.metric]) for c in constraints]


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (all objectives minimised),
    by pymoo's non-dominated sorting. Duplicate points are all kept (none dominates
    another)."""
    pts = np.asarray(points, dtype=float)
    mask = np.zeros(len(pts), dtype=bool)
    if len(pts):
        mask[_nds().do(pts.reshape(len(pts), -1), only_non_dominated_front=True)] = True
    return mask


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """Front index of every row (0 = Pareto front), by pymoo's non-dominated sorting."""
    pts = np.asarray(points, dtype=float)
    if not len(pts):
        return np.zeros(0, dtype=int)
    return np.asarray(_nds().do(pts.reshape(len(pts), -1), return_rank=True)[1], dtype=int)


def hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by ``losses`` (minimised) up to ``reference`` (pymoo's
    indicator; points not better than the reference in every objective add nothing)."""
    from pymoo.indicators.hv import HV

    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(losses, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if not len(pts):
        return 0.0
    return float(HV(ref_point=ref)(pts))


def _nds() -> Any:
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    return NonDominatedSorting()
