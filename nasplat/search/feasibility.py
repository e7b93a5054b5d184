"""Infeasible constraints fail before the search starts, with the closest arch.

A constraint no arch of the space can satisfy (``macs <= 1k``, ``accuracy >= 120%``)
would otherwise burn the whole budget and end with an empty Pareto front. Before the
search, each constraint on a cheap metric (MACs, params, predicted latency) is probed:
the space's smallest and largest archs, a seeded random sample, then a greedy
coordinate descent (every value of every choice, kept when it moves the metric towards
the limit) from the best probe. For the monotone cost models of the shipped families
(a larger choice never costs less) the descent reaches the true optimum, so the
reported closest arch is the best the space offers; for others it is the best found.
Constraints on the accuracy (a fraction in [0, 1]) are checked against that range; a
predicted accuracy is probed like any cheap metric; an accuracy measured on the supernet
is checked once the evaluators run (:func:`check_accuracy_reachable`): the largest
subnet is evaluated first, and ``accuracy >= L`` with L above its accuracy stops the
search before it spends the budget.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from ..space import Arch, SearchSpace
from .metrics import Constraint, Metric

RANDOM_PROBES = 256
SWEEPS = 2


def _fmt(value: float, metric: Metric) -> str:
    if metric.name in ("macs", "params"):
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.4g}{suffix}"
        return f"{value:.4g}"
    if metric.name == "accuracy":
        return f"{value * 100:.4g}%"
    return f"{value:.4g}{' ' + metric.unit if metric.unit else ''}"


def closest_arch(space: SearchSpace, metric: Metric, c: Constraint, seed: int = 0) -> tuple[Arch, float]:
    """The probed arch whose ``metric`` violates ``c`` least (see the module doc)."""
    assert metric.compute is not None
    rng = np.random.default_rng(seed)
    probes: list[Arch] = [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(RANDOM_PROBES)]
    vals = metric.compute(probes)
    i = int(np.argmin([c.violation(v) for v in vals]))
    best, best_v = probes[i], float(vals[i])
    for _ in range(SWEEPS):
        improved = False
        for p in space.params:
            if c.ok(best_v):
                return best, best_v
            cands: list[Arch] = []
            for choice in p.choices:
                if choice != best[p.name]:
                    values = dict(best)
                    values[p.name] = choice
                    cands.append(space.arch(values))
            if not cands:
                continue
            cv = metric.compute(cands)
            j = int(np.argmin([c.violation(v) for v in cv]))
            if c.violation(cv[j]) < c.violation(best_v):
                best, best_v, improved = cands[j], float(cv[j]), True
        if not improved:
            break
    return best, best_v


def check_feasible(space: SearchSpace, metrics: Sequence[Metric], constraints: Sequence[Constraint],
                   file: Any = None) -> None:
    """Raise a UserError for the first constraint that no arch can satisfy."""
    by_name = {m.name: m for m in metrics}
    for i, c in enumerate(constraints):
        field = f"search.constraints.{i}"
        m = by_name.get(c.metric)
        if m is None:
            continue
        if m.name == "accuracy":
            if (c.op == ">=" and c.limit > 1.0) or (c.op == "<=" and c.limit < 0.0):
                raise UserError(f"no arch can satisfy {c.text!r}: accuracy lies in [0%, 100%]; the closest any "
                                f"arch can come is {'100%' if c.op == '>=' else '0%'}", file, field)
            if m.expensive:
                continue  # measured on the supernet: check_accuracy_reachable, once evaluators run
        if m.compute is None:
            continue
        arch, value = closest_arch(space, m, c)
        if not c.ok(value):
            raise UserError(f"no arch can satisfy {c.text!r}: the closest arch found (id {arch.id}) has "
                            f"{m.name} {_fmt(value, m)}: {arch.to_json()}", file, field)


def check_accuracy_reachable(space: SearchSpace, constraints: Sequence[Constraint], evaluate: Any,
                             file: Any = None) -> None:
    """Evaluate the space's largest subnet (``evaluate(archs)`` -> result dicts) and raise a
    UserError for an ``accuracy >= L`` constraint it misses: in a supernet trained with
    the sandwich rule or progressive shrinking the largest subnet is the most accurate
    (it is trained at every step), so no arch is expected to reach L. A heuristic, named
    as such in the message; costs one evaluation, outside the budget."""
    cons = [(i, c) for i, c in enumerate(constraints) if c.metric == "accuracy" and c.op == ">="]
    if not cons:
        return
    arch = space.max_arch()
    acc = float(evaluate([arch])[0]["accuracy"])
    for i, c in cons:
        if not c.ok(acc):
            raise UserError(f"no arch is expected to satisfy {c.text!r}: the largest subnet (id {arch.id}), the most "
                            f"accurate in a supernet trained with the sandwich rule or progressive shrinking, has "
                            f"{acc * 100:.2f}%; the search stops before spending its budget", file,
                            f"search.constraints.{i}")
