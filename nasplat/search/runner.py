"""The search loop: Optuna ask/tell over a storage-backed study, cheap metrics in the
driver, supernet accuracy on the Ray evaluator pool, one record per distinct arch.

Every arch is evaluated at most once per study: archs are canonical (``space.arch``)
and identified by ``Arch.id``; when a sampler proposes an arch already evaluated, the
trial is told the stored values (marked ``duplicate_of``) without a new evaluation and
does not count against ``search.budget``. On resume, trials left RUNNING by a killed
driver are marked FAIL (their results never reached the storage, so their archs are
free to be proposed again), and the evaluated set is rebuilt from COMPLETE trials.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import optuna

from ..space import Arch, SearchSpace
from ..ui import progress_bar
from .metrics import Constraint, Metric, constraint_values, hypervolume
from .searchers import SEARCHERS

optuna.logging.set_verbosity(optuna.logging.WARNING)

ExpensiveFn = Callable[[Sequence[Arch], Callable[[int, dict[str, Any]], None]], Any]


@dataclass
class Problem:
    space: SearchSpace
    objectives: list[Metric]
    constraints: list[Constraint] = field(default_factory=list)
    extra: list[Metric] = field(default_factory=list)  # constrained but not optimised

    @property
    def all_metrics(self) -> list[Metric]:
        return self.objectives + self.extra

    @property
    def directions(self) -> list[str]:
        return [m.direction for m in self.objectives]

    @property
    def expensive(self) -> list[Metric]:
        return [m for m in self.all_metrics if m.expensive]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {p.name: optuna.distributions.CategoricalDistribution(list(p.choices)) for p in self.space.params}

    def cheap_values(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        out: list[dict[str, float]] = [{} for _ in archs]
        for m in self.all_metrics:
            if not m.expensive and m.compute is not None:
                for d, v in zip(out, m.compute(archs)):
                    d[m.name] = float(v)
        return out

    def losses(self, values: dict[str, float]) -> np.ndarray:
        return np.array([m.loss(values[m.name]) for m in self.objectives])

    def reference(self) -> np.ndarray:
        return np.full(len(self.objectives), 1.1)

    def feasible(self, values: dict[str, float]) -> bool:
        return all(c.ok(values[c.metric]) for c in self.constraints)


@dataclass
class SearchResult:
    records: list[dict[str, Any]]  # one per distinct evaluated arch, in evaluation order
    hv_history: list[float]
    problem: Problem
    new_evaluations: int = 0
    duplicates: int = 0

    def front(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("pareto")]


def records_from_study(study: optuna.Study, space: SearchSpace) -> dict[str, dict[str, Any]]:
    known: dict[str, dict[str, Any]] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                    key=lambda t: (t.datetime_complete or t.datetime_start, t.number)):
        ua = t.user_attrs
        if "duplicate_of" in ua or "arch_id" not in ua or ua["arch_id"] in known:
            continue
        known[ua["arch_id"]] = {"number": t.number, "arch_id": ua["arch_id"], "arch": Arch.from_json(ua["arch"]),
                                "values": dict(ua["values"]), "feasible": bool(ua["feasible"]),
                                "seconds": ua.get("seconds"), "node": ua.get("node", "")}
    return known


def fail_stale_trials(study: optuna.Study) -> int:
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def annotate(problem: Problem, records: list[dict[str, Any]]) -> list[float]:
    """Mark ``pareto`` on each record (front of the feasible ones); return the
    hypervolume after each evaluation, in order."""
    from .metrics import pareto_mask

    ref = problem.reference()
    hv, front = [], np.zeros((0, len(ref)))
    for r in records:
        r["pareto"] = False
        if r["feasible"]:
            front = np.vstack([front, problem.losses(r["values"])])
            front = front[pareto_mask(front)]
        hv.append(hypervolume(front, ref) if len(front) else 0.0)
    feas = [r for r in records if r["feasible"]]
    if feas:
        mask = pareto_mask(np.stack([problem.losses(r["values"]) for r in feas]))
        for r, m in zip(feas, mask):
            r["pareto"] = bool(m)
    return hv


class SearchLoop:
    def __init__(self, problem: Problem, cfg: Any, study: optuna.Study, seed: int,
                 expensive: ExpensiveFn | None = None, on_round: Callable[[], None] | None = None,
                 quiet: bool = False, budget: int | None = None):
        self.problem, self.cfg, self.study, self.seed = problem, cfg, study, seed
        self.expensive, self.on_round, self.quiet = expensive, on_round, quiet
        self.budget = budget if budget is not None else cfg.budget
        self.searcher = SEARCHERS.get(cfg.searcher)(problem, cfg, seed)
        self.dists = problem.distributions()
        self.known = records_from_study(study, problem.space)
        self.new_evaluations = 0
        self.duplicates = 0

    def _tell_result(self, trial: optuna.trial.Trial, arch: Arch, values: dict[str, float],
                     seconds: float | None = None, node: str = "") -> None:
        p = self.problem
        cons = constraint_values(p.constraints, values)
        feasible = all(c <= 0 for c in cons)
        trial.set_user_attr("arch_id", arch.id)
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("values", values)
        trial.set_user_attr("feasible", feasible)
        trial.set_user_attr("constraints", cons)
        self._set_constraints(trial, cons)
        if seconds is not None:
            trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("node", node)
        self.study.tell(trial, [values[m.name] for m in p.objectives])
        self.known[arch.id] = {"number": trial.number, "arch_id": arch.id, "arch": arch, "values": values,
                               "feasible": feasible, "seconds": seconds, "node": node}

    def _set_constraints(self, trial: optuna.trial.Trial, cons: list[float]) -> None:
        """Optuna 5's constraint API (``constraints_func`` is deprecated there): every
        sampler reads ``trial.constraints``; <= 0 is feasible."""
        for c, v in zip(self.problem.constraints, cons):
            trial.set_constraint(c.text, v)

    def _tell_duplicate(self, trial: optuna.trial.Trial, rec: dict[str, Any]) -> None:
        trial.set_user_attr("duplicate_of", rec["number"])
        self._set_constraints(trial, constraint_values(self.problem.constraints, rec["values"]))
        self.study.tell(trial, [rec["values"][m.name] for m in self.problem.objectives])
        self.duplicates += 1

    def run(self) -> SearchResult:
        p = self.problem
        batch = self.cfg.batch or self.cfg.population
        dup_streak = 0
        with progress_bar("search", self.budget, enabled=not self.quiet) as bar:
            bar.advance(min(len(self.known), self.budget))
            while len(self.known) < self.budget:
                want = min(batch, self.budget - len(self.known))
                self.searcher.before_round(self.study, self.known, want)
                trials: list[optuna.trial.Trial] = []
                archs: list[Arch] = []
                pending_dups: list[tuple[optuna.trial.Trial, str]] = []
                while len(archs) < want and dup_streak < 50 * want + 200:
                    t = self.study.ask(self.dists)
                    a = p.space.arch(t.params)
                    if a.id in self.known:
                        self._tell_duplicate(t, self.known[a.id])
                        dup_streak += 1
                    elif any(a.id == b.id for b in archs):
                        pending_dups.append((t, a.id))
                        dup_streak += 1
                    else:
                        trials.append(t)
                        archs.append(a)
                        dup_streak = 0
                if not archs:
                    break  # the sampler only proposes known archs (a tiny space)
                values = p.cheap_values(archs)
                if p.expensive:
                    if self.expensive is None:
                        raise RuntimeError("an expensive metric needs an evaluator")

                    def done(i: int, res: dict[str, Any]) -> None:
                        for m in p.expensive:
                            values[i][m.name] = float(res[m.name])
                        self._tell_result(trials[i], archs[i], values[i], res.get("seconds"), res.get("node", ""))
                        self.new_evaluations += 1
                        bar.advance(1, f"{m.name}={res.get(m.name, 0):.3f}")

                    self.expensive(archs, done)
                else:
                    for t, a, v in zip(trials, archs, values):
                        self._tell_result(t, a, v)
                        self.new_evaluations += 1
                    bar.advance(len(archs))
                for t, aid in pending_dups:
                    self._tell_duplicate(t, self.known[aid])
                if self.on_round is not None:
                    self.on_round()
        records = list(self.known.values())
        hv = annotate(p, records)
        return SearchResult(records, hv, p, self.new_evaluations, self.duplicates)


def fingerprint(problem: Problem, cfg: Any) -> dict[str, Any]:
    return {"objectives": [m.name for m in problem.objectives], "constraints": [c.text for c in problem.constraints],
            "searcher": cfg.searcher, "space_hash": problem.space.hash()}


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def now() -> float:
    return time.time()
