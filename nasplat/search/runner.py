"""The search loop: Optuna ask/tell over the study, cheap metrics in the driver,
supernet accuracy on the Ray evaluator pool, one record per distinct arch.

Archs are asked define-by-run (:mod:`.encoding`: ordinal choices as integers, inactive
blocks never asked) and identified by ``Arch.id``. Every arch is evaluated at most once
per study: a proposal of an arch already evaluated (or already proposed this round) is
answered from the records without an evaluation and told PRUNED with ``duplicate_of``
naming the trial that holds its values, so it never counts as a COMPLETE trial, against
``search.budget``, in the hypervolume history or in ``trials.csv``. PRUNED rather than
FAIL because the samplers read it usefully: NSGA-II's populations stay free of repeats
(as with pymoo's duplicate elimination) and TPE counts a repeat among its "bad" trials,
so it stops proposing it (with FAIL, which TPE ignores, a converged TPE re-proposed the
same archs hundreds of times). On resume,
trials left RUNNING by a killed driver are marked FAIL (their results never reached the
storage, so their archs are free to be proposed again), and the evaluated set is rebuilt
from the COMPLETE trials.

The loop's own cost per trial (ask, encode, tell, record) is a few milliseconds and does
not grow with the study, because the study lives in memory (:mod:`.storage`) and the
sampler is the only part that looks at past trials.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import optuna

from ..errors import UserError
from ..space import Arch, SearchSpace
from ..ui import progress_bar, say
from .encoding import TrialEncoding
from .metrics import Constraint, Metric, constraint_values, hypervolume, pareto_mask
from .searchers import SEARCHERS

if TYPE_CHECKING:
    from .evaluator import Completed

# expensive(archs, on_result(i, result), on_error(i, completed)): evaluates the expensive metrics
ExpensiveFn = Callable[[Sequence[Arch], Callable[[int, dict[str, Any]], None], Callable[[int, "Completed"], None]], Any]
# consecutive failed evaluations (none succeeding in between) after which the search stops
MAX_FAILURES_IN_A_ROW = 20
ENCODING = "ordinal-define-by-run/1"  # recorded in the study: an older study cannot be resumed with it
DUPLICATE_ASKS = 20  # a round ends the search after this many asks per wanted arch without a new one


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

    def cheap_values(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        """Every cheap metric of ``archs``, one batch per metric."""
        out: list[dict[str, float]] = [{} for _ in archs]
        codes = self.space.encode_batch(archs) if archs else None
        for m in self.all_metrics:
            if m.expensive:
                continue
            vals = m.batch(codes) if m.batch is not None else m.compute(archs)  # type: ignore[misc]
            for d, v in zip(out, vals):
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
    """Arch id -> record of every evaluated arch, in completion order."""
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
    """Runs a search on ``study`` until ``budget`` distinct archs are evaluated.

    The loop sets the study's sampler to the searcher's and the study's metric names
    (optuna-dashboard shows them). ``expensive(archs, done, failed)`` evaluates the expensive
    metrics, calling ``done(i, result)`` as each arch finishes and ``failed(i, completed)``
    for an evaluation that raised: that trial alone FAILs (its arch stays free to be
    proposed again), the error's one-line message goes to the console, and the search goes
    on; :data:`MAX_FAILURES_IN_A_ROW` failures with no success in between stop it with the
    last message (a broken evaluator, not a bad arch). ``persist()`` writes the
    study (called after every round and at least every second while results arrive);
    ``on_round()`` runs after every round."""

    def __init__(self, problem: Problem, cfg: Any, study: optuna.Study, seed: int, *,
                 expensive: ExpensiveFn | None = None, on_round: Callable[[], None] | None = None,
                 persist: Callable[[], None] | None = None, quiet: bool = False, budget: int | None = None):
        self.problem, self.cfg, self.study, self.seed = problem, cfg, study, seed
        self.expensive, self.on_round, self.persist, self.quiet = expensive, on_round, persist, quiet
        self.budget = budget if budget is not None else cfg.budget
        self.searcher = SEARCHERS.get(cfg.searcher)(problem, cfg, seed)
        study.sampler = self.searcher.sampler()
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([m.name for m in problem.objectives])
        self.encoding = TrialEncoding(problem.space)
        self.known = records_from_study(study, problem.space)
        self.new_evaluations = 0
        self.duplicates = 0
        self._failures_in_a_row = 0
        self._saved = time.monotonic()

    def _save(self, force: bool = False) -> None:
        if self.persist is not None and (force or time.monotonic() - self._saved > 1.0):
            self.persist()
            self._saved = time.monotonic()

    def _tell_result(self, trial: optuna.trial.Trial, arch: Arch, values: dict[str, float],
                     seconds: float | None = None, node: str = "") -> dict[str, Any]:
        p = self.problem
        cons = constraint_values(p.constraints, values)
        feasible = all(c <= 0 for c in cons)
        trial.set_user_attr("arch_id", arch.id)
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("values", values)
        trial.set_user_attr("feasible", feasible)
        self._set_constraints(trial, cons)
        if seconds is not None:
            trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("node", node)
        self.study.tell(trial, [values[m.name] for m in p.objectives])
        rec = {"number": trial.number, "arch_id": arch.id, "arch": arch, "values": values,
               "feasible": feasible, "seconds": seconds, "node": node}
        self.known[arch.id] = rec
        self.new_evaluations += 1
        self._save()
        return rec

    def _tell_failure(self, trial: optuna.trial.Trial, arch: Arch, completed: Completed) -> None:
        message = completed.message
        trial.set_user_attr("arch_id", arch.id)
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("error", message)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self._failures_in_a_row += 1
        say(f"search: evaluation of arch {arch.id} failed (trial {trial.number} FAIL): {message}", True)
        self._save()
        if self._failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise UserError(f"{self._failures_in_a_row} evaluations in a row failed; the last: {message}", None,
                            "search")

    def _set_constraints(self, trial: optuna.trial.Trial, cons: list[float]) -> None:
        """Optuna 5's constraint API (``constraints_func`` is deprecated there): every
        sampler reads ``trial.constraints``; <= 0 is feasible."""
        for c, v in zip(self.problem.constraints, cons):
            trial.set_constraint(c.text, v)

    def _tell_duplicate(self, trial: optuna.trial.Trial, number: int) -> None:
        """Answered from the records: PRUNED, pointing at the trial that holds the values."""
        trial.set_user_attr("duplicate_of", number)
        self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self.duplicates += 1

    def _ask_round(self, want: int) -> tuple[list[optuna.trial.Trial], list[Arch]]:
        """Up to ``want`` trials of archs never evaluated (fewer when the sampler keeps
        proposing known archs, or the searcher proposes fewer)."""
        proposed = self.searcher.propose(self.known, want)
        if proposed is not None:
            for a in proposed[:want]:
                self.study.enqueue_trial(self.encoding.params(a), skip_if_exists=False)
        limit = len(proposed[:want]) if proposed is not None else DUPLICATE_ASKS * want + 100
        trials: list[optuna.trial.Trial] = []
        archs: list[Arch] = []
        this_round: dict[str, int] = {}
        for _ in range(limit):
            if len(archs) >= want:
                break
            t = self.study.ask()
            a = self.encoding.suggest(t)
            if a.id in self.known:
                self._tell_duplicate(t, self.known[a.id]["number"])
            elif a.id in this_round:
                self._tell_duplicate(t, this_round[a.id])
            else:
                this_round[a.id] = t.number
                trials.append(t)
                archs.append(a)
        return trials, archs

    def run(self) -> SearchResult:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no INFO line per trial
        try:
            return self._run()
        finally:
            optuna.logging.set_verbosity(verbosity)

    def _run(self) -> SearchResult:
        p = self.problem
        batch = self.cfg.batch or self.cfg.population
        with progress_bar("search", self.budget, enabled=not self.quiet) as bar:
            bar.advance(min(len(self.known), self.budget))
            while len(self.known) < self.budget:
                trials, archs = self._ask_round(min(batch, self.budget - len(self.known)))
                if not archs:  # a tiny space, or a converged searcher
                    say(f"search: the {self.cfg.searcher} searcher proposed only archs already evaluated; stopping at "
                        f"{len(self.known)} of {self.budget}", not self.quiet)
                    break
                values = p.cheap_values(archs)
                done_now: list[dict[str, Any]] = []
                if p.expensive:
                    if self.expensive is None:
                        raise RuntimeError("an expensive metric needs an evaluator")

                    def done(i: int, res: dict[str, Any]) -> None:
                        for m in p.expensive:
                            values[i][m.name] = float(res[m.name])
                        done_now.append(self._tell_result(trials[i], archs[i], values[i], res.get("seconds"),
                                                          res.get("node", "")))
                        self._failures_in_a_row = 0
                        bar.advance(1, f"{p.expensive[0].name}={res.get(p.expensive[0].name, 0):.3f}")

                    self.expensive(archs, done, lambda i, completed: self._tell_failure(trials[i], archs[i], completed))
                else:
                    done_now = [self._tell_result(t, a, v) for t, a, v in zip(trials, archs, values)]
                    bar.advance(len(archs))
                self.searcher.observe(done_now)
                self._save(force=True)
                if self.on_round is not None:
                    self.on_round()
        records = list(self.known.values())
        hv = annotate(p, records)
        return SearchResult(records, hv, p, self.new_evaluations, self.duplicates)


def fingerprint(problem: Problem, cfg: Any) -> dict[str, Any]:
    """What a stored study must match to be resumed."""
    return {"objectives": [m.name for m in problem.objectives], "constraints": [c.text for c in problem.constraints],
            "searcher": cfg.searcher, "space_hash": problem.space.hash(), "encoding": ENCODING}
