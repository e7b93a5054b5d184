"""What a search measures about an arch: objectives and constrained quantities.

A metric is named as in the experiment YAML: ``accuracy``, ``latency@<profile>``,
``macs``, ``params``. Kinds live in the :data:`METRICS` registry (a new kind is one
factory and one decorator). *Cheap* metrics are computed in the driver for a whole
batch at once; *expensive* ones (``accuracy`` through the supernet) are evaluated by
the Ray evaluator pool.

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
    compute: Callable[[Sequence[Arch]], list[float]] | None = None  # cheap metrics
    scale: float = 1.0  # hypervolume normalisation (value of the max arch for costs)

    def loss(self, value: float) -> float:
        """Normalised, minimised form used for hypervolume."""
        if self.direction == "maximize":
            return 1.0 - value / self.scale
        return value / self.scale


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
    return Metric("macs", "minimize", "MACs", compute=lambda archs: [float(space.macs(a)) for a in archs],
                  scale=float(space.macs(space.max_arch())))


@METRICS.register("params")
def _params(arg: str | None, ctx: MetricContext) -> Metric:
    space = ctx.space
    return Metric("params", "minimize", "", compute=lambda archs: [float(space.num_params(a)) for a in archs],
                  scale=float(space.num_params(space.max_arch())))


@METRICS.register("accuracy")
def _accuracy(arg: str | None, ctx: MetricContext) -> Metric:
    if ctx.accuracy_mode == "supernet":
        return Metric("accuracy", "maximize", "", expensive=True)
    predict = _load_predictor(ctx, "accuracy", None)
    return Metric("accuracy", "maximize", "", compute=lambda archs: [float(v) for v in predict(list(archs))])


@METRICS.register("latency")
def _latency(arg: str | None, ctx: MetricContext) -> Metric:
    if not arg:
        raise UserError("latency needs a profile: latency@<profile>", ctx.file, ctx.field)
    if ctx.latency_mode == "measured":
        measure = _load_measurer(ctx, arg)
        m = Metric(f"latency@{arg}", "minimize", "ms", compute=lambda archs: [float(v) for v in measure(list(archs))])
    else:
        predict = _load_predictor(ctx, "latency", arg)
        m = Metric(f"latency@{arg}", "minimize", "ms", compute=lambda archs: [float(v) for v in predict(list(archs))])
    m.scale = float(m.compute([ctx.space.max_arch()])[0]) or 1.0  # type: ignore[misc]
    return m


def _load_predictor(ctx: MetricContext, what: str, profile: str | None) -> Callable[[list[Arch]], Sequence[float]]:
    """archs -> predictions, from [latency]'s ``nasplat.predict`` (the run's own
    predictor, else a shipped one for this space)."""
    from .. import predict as P

    run_dir = ctx.exp.run_dir if ctx.exp is not None else None
    if what == "latency":
        from ..hw.stage import experiment_profile

        name = experiment_profile(ctx.exp, profile).name if ctx.exp is not None else profile
        pred = P.load_latency_predictor(run_dir, name, ctx.space)
    else:
        if run_dir is None:
            raise UserError("an accuracy predictor needs an experiment", ctx.file, ctx.field)
        pred = P.load_accuracy_predictor(run_dir, ctx.space)
    return lambda archs: np.asarray(pred.predict(list(archs)), dtype=float)


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
    """Boolean mask of the non-dominated rows of ``points`` (all objectives minimised).
    Duplicate points are all kept (none dominates another)."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        dominated = np.all(pts <= pts[i], axis=1) & np.any(pts < pts[i], axis=1)
        if dominated.any():
            mask[i] = False
    return mask


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """Front index of every row (0 = Pareto front), by repeated peeling."""
    pts = np.asarray(points, dtype=float)
    ranks = np.full(len(pts), -1)
    left = np.arange(len(pts))
    r = 0
    while len(left):
        m = pareto_mask(pts[left])
        ranks[left[m]] = r
        left = left[~m]
        r += 1
    return ranks


def hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by ``losses`` (minimised) up to ``reference``."""
    from optuna._hypervolume import compute_hypervolume

    pts = np.asarray(losses, dtype=float).reshape(-1, len(reference))
    pts = pts[np.all(pts < reference, axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[pareto_mask(pts)]
    pts = np.unique(pts, axis=0)
    return float(compute_hypervolume(pts, np.asarray(reference, dtype=float), assume_pareto=True))
