"""Searchers, registered by the name used in ``search.searcher``.

``nsga2``, ``tpe``, ``gp`` and ``random`` are Optuna samplers driving the study
directly (``NSGAIISampler``, multi-objective ``TPESampler``, ``GPSampler`` (logEHVI),
``RandomSampler``). They see the define-by-run encoding of :mod:`.encoding` (ordinal
choices as integers, inactive blocks never asked); Optuna's NSGA-II and GP model only
the choices every trial has (the intersection search space) and draw a block that
exists in some archs only at random, which is Optuna's semantics for conditional
spaces (TPE models them, ``group=True``). Constraints reach every sampler through
Optuna 5's ``Trial.set_constraint`` (the loop sets them before ``tell``).

``pymoo_nsga2`` and ``linas`` propose whole populations (:meth:`Searcher.propose`),
which the loop enqueues as trials. Both run pymoo's NSGA-II with DyNAS-T's settings
(IntelLabs/DyNAS-T ``search/evolutionary.py``, ``configure_nsga2``): integer random
sampling, SBX (prob 0.9, eta 15) and polynomial mutation (prob 0.02, eta 20) on the
choice indices as floats with rounding repair, duplicate elimination. Duplicates are
judged on the canonical encoding (a gene of a block beyond its stage's depth does not
make a new network; DyNAS-T compares raw vectors). The genome is the full index vector,
inactive genes included and inherited, as DyNAS-T's is.

``linas`` is DyNAS-T's LINAS loop (``search/tactic/linas.py``): the first population is
random and validated for real; then every round fits one predictor per objective that
is not computable (accuracy through the supernet, measured latency) on every validated
arch, runs the inner pymoo NSGA-II on the predictors for ``linas.inner_evals``
evaluations (vectorised: one call per generation), and validates the inner search's
final population. Where it deviates from DyNAS-T, and why:

- cheap objectives (MACs, params, a latency predictor) are computed exactly in the inner
  loop, not learned from the validated archs (they are exact and as fast);
- the predictor is DyNAS-T's (ridge or RBF SVR on the one-hot encoding, whichever
  scores the better 5-fold cross-validated MAPE) with log-spaced grids of 7 values
  instead of 100 (``C`` 1..100, ``alpha`` 0.1..10), which keeps a refit well under a
  second at hundreds of archs;
- the next population is the inner final population's archs never validated (DyNAS-T
  validates the whole final population again, repeats included), topped up from every
  inner evaluation by non-dominated rank and crowding when fewer than a population
  are new, so no evaluation is spent twice.
"""
from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
import optuna

from ..registry import Registry
from ..space import Arch, SearchSpace

if TYPE_CHECKING:
    from .config import SearchConfig
    from .runner import Problem

Fn = Callable[[np.ndarray], np.ndarray]


class Searcher(ABC):
    """The interface: a sampler for the outer study, optionally whole populations
    proposed by the searcher itself. Stable plug-in surface."""

    name: ClassVar[str]  # set by the registry

    def __init__(self, problem: Problem, cfg: SearchConfig, seed: int):
        self.problem, self.cfg, self.seed = problem, cfg, seed

    @abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of the outer study (asked whenever :meth:`propose` returns None)."""

    def propose(self, known: dict[str, dict[str, Any]], want: int) -> list[Arch] | None:
        """Called before each round with every evaluated record (arch id -> record):
        up to ``want`` archs never evaluated to evaluate next, or None to let the
        sampler propose. An empty list ends the search (nothing new to propose)."""
        return None

    def observe(self, records: list[dict[str, Any]]) -> None:
        """Called after each round with the records evaluated in it."""


SEARCHERS: Registry[type[Searcher]] = Registry("searcher", name_attr="name")


@SEARCHERS.register("nsga2")
class NSGA2(Searcher):
    def sampler(self) -> optuna.samplers.BaseSampler:
        opts = {"population_size": self.cfg.population, **self.cfg.options}
        return optuna.samplers.NSGAIISampler(seed=self.seed, **opts)


@SEARCHERS.register("tpe")
class TPE(Searcher):
    """Optuna's multivariate TPE with ``group=True`` (it models the conditional blocks).
    An ask costs 0.1-0.5 s on the OFA spaces and grows with the study (Parzen estimators
    over every trial): for thousands of evaluations prefer nsga2, pymoo_nsga2 or linas."""

    def sampler(self) -> optuna.samplers.BaseSampler:
        import warnings

        opts = {"multivariate": True, "group": True, "n_startup_trials": 10, "constant_liar": True,
                **self.cfg.options}
        with warnings.catch_warnings():  # "group" and "constant_liar" are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=self.seed, **opts)


GP_MAX_PARAMS = 20
GP_CAPPED_SEARCH = (512, 2)  # acquisition search above GP_MAX_PARAMS: QMC candidates, local searches


@SEARCHERS.register("gp")
class GP(Searcher):
    """Optuna's GPSampler (logEHVI). Its ask fits a GP and optimises the acquisition over
    every choice every trial has; past ~20 of them (ofa_mbv3_small has 26) Optuna's
    default search (2048 QMC candidates, 10 local searches) takes 15-60 s per ask here.
    There the searcher says so in one line, names the alternatives, and caps the
    acquisition search at 512 candidates and 2 local searches (a deviation from
    Optuna's defaults: a coarser optimum of the acquisition, asks of a few seconds)."""

    def sampler(self) -> optuna.samplers.BaseSampler:
        from .encoding import TrialEncoding

        n = len(TrialEncoding(self.problem.space).dists)
        opts = {"n_startup_trials": 10, "warn_independent_sampling": False, **self.cfg.options}
        sampler = optuna.samplers.GPSampler(seed=self.seed, **opts)
        if n > GP_MAX_PARAMS:
            print(f"search: gp models {n} choices here, each ask takes seconds and grows with the trials; its "
                  f"acquisition search is capped (use tpe, nsga2, pymoo_nsga2 or linas for long searches)",
                  file=sys.stderr, flush=True)
            if hasattr(sampler, "_n_preliminary_samples") and hasattr(sampler, "_n_local_search"):
                sampler._n_preliminary_samples, sampler._n_local_search = GP_CAPPED_SEARCH  # noqa: SLF001
        return sampler


@SEARCHERS.register("random")
class Random(Searcher):
    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


# -- pymoo ------------------------------------------------------------------------------

class Genome:
    """The pymoo decision vector of a space: the index of every multi-option choice."""

    def __init__(self, space: SearchSpace):
        self.space = space
        sizes = np.array([len(p.choices) for p in space.params])
        self.cols = np.flatnonzero(sizes > 1)
        self.upper = sizes[self.cols] - 1

    def codes(self, X: np.ndarray) -> np.ndarray:
        """Genomes (rounded) -> canonical index rows of the space."""
        out = np.zeros((len(X), len(self.space.params)), dtype=np.int64)
        out[:, self.cols] = np.clip(np.rint(np.asarray(X, dtype=np.float64)), 0, self.upper)
        return self.space.canonical(out)

    def genes(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes, dtype=np.int64)[:, self.cols]

    def problem(self, n_obj: int, n_constr: int, evaluate: Callable[[np.ndarray], tuple[np.ndarray, Any]] | None = None):
        """A pymoo Problem on this genome (``evaluate(codes) -> (F, G)`` when it is
        evaluated by pymoo; ask/tell users set F and G themselves)."""
        from pymoo.core.problem import Problem as PymooProblem

        genome = self

        class _Problem(PymooProblem):
            def __init__(self) -> None:
                super().__init__(n_var=len(genome.cols), n_obj=n_obj, n_ieq_constr=n_constr, xl=0,
                                 xu=genome.upper, vtype=int)

            def _evaluate(self, X: np.ndarray, out: dict, *args: Any, **kwargs: Any) -> None:
                assert evaluate is not None
                F, G = evaluate(genome.codes(X))
                out["F"] = F
                if n_constr:
                    out["G"] = G

        return _Problem()

    def nsga2(self, pop_size: int, sampling: Any = None):
        """pymoo NSGA-II with DyNAS-T's operators (see the module docstring)."""
        from pymoo.algorithms.moo.nsga2 import NSGA2 as PymooNSGA2
        from pymoo.core.duplicate import DefaultDuplicateElimination
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling

        same = DefaultDuplicateElimination(func=lambda pop: self.codes(pop.get("X")).astype(np.float64))
        return PymooNSGA2(pop_size=pop_size, sampling=IntegerRandomSampling() if sampling is None else sampling,
                          crossover=SBX(prob=0.9, eta=15.0, vtype=float, repair=RoundingRepair()),
                          mutation=PM(prob=0.02, eta=20.0, vtype=float, repair=RoundingRepair()),
                          eliminate_duplicates=same)


def objective_arrays(problem: Problem, values: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(F: the objectives' losses, G: the constraint violations) per row."""
    F = np.stack([m.loss(np.asarray(values[m.name], dtype=np.float64)) for m in problem.objectives], 1)
    G = np.zeros((len(F), 0))
    if problem.constraints:
        G = np.stack([c.violation(np.asarray(values[c.metric], dtype=np.float64)) for c in problem.constraints], 1)
    return F, G


def record_arrays(problem: Problem, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    return objective_arrays(problem, {n: np.array([r["values"][n] for r in records])
                                      for n in {m.name for m in problem.all_metrics}})


def _select(problem: Any, pop: Any, n: int) -> Any:
    """``n`` members of a pymoo population by constrained rank and crowding (NSGA-II's survival)."""
    from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

    if len(pop) <= n:
        return pop
    return RankAndCrowding().do(problem, pop, n_survive=n, random_state=np.random.default_rng(0))


def _population(X: np.ndarray, F: np.ndarray, G: np.ndarray) -> Any:
    from pymoo.core.population import Population

    pop = Population.new("X", X.astype(np.float64), "F", F)
    cv = np.maximum(G, 0.0).sum(1) if G.shape[1] else np.zeros(len(F))
    if G.shape[1]:
        pop.set("G", G)
    pop.set("CV", cv[:, None])
    return pop


@SEARCHERS.register("pymoo_nsga2")
class PymooNSGA2(Searcher):
    """pymoo's NSGA-II as the outer searcher (ask/tell), with DyNAS-T's settings, so
    the comparison with DyNAS-T's engine is direct. On resume the first population is
    the best ``population`` of the archs already evaluated (NSGA-II's survival)."""

    def __init__(self, problem: Problem, cfg: SearchConfig, seed: int):
        super().__init__(problem, cfg, seed)
        self.genome = Genome(problem.space)
        self.pproblem = self.genome.problem(len(problem.objectives), len(problem.constraints))
        self.algorithm: Any = None
        self.pending: tuple[Any, list[Arch]] | None = None  # the population asked, its archs

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)  # not used: every trial is proposed

    def _setup(self, known: dict[str, dict[str, Any]]) -> None:
        from pymoo.core.termination import NoTermination

        sampling = None
        if len(known) >= self.cfg.population:  # resume: start from the survivors of what is known
            recs = list(known.values())
            F, G = record_arrays(self.problem, recs)
            X = self.genome.genes(self.problem.space.encode_batch([r["arch"] for r in recs]))
            sampling = _select(self.pproblem, _population(X, F, G), self.cfg.population).get("X")
        self.algorithm = self.genome.nsga2(self.cfg.population, sampling)
        self.algorithm.setup(self.pproblem, termination=NoTermination(), seed=self.seed, verbose=False)

    def propose(self, known: dict[str, dict[str, Any]], want: int) -> list[Arch] | None:
        if self.algorithm is None:
            self._setup(known)
        for _ in range(100):  # offspring made only of known archs are answered at once
            if self.pending is not None:
                left = list({a.id: a for a in self.pending[1] if a.id not in known}.values())
                if left:  # the population asked last is not all evaluated yet (a round smaller than it)
                    return left[:want]
                self._tell(known)
            pop = self.algorithm.ask()
            self.pending = (pop, self.problem.space.decode_batch(self.genome.codes(pop.get("X"))))
        return []

    def _tell(self, known: dict[str, dict[str, Any]]) -> None:
        """Give pymoo the values of the population asked last (from the evaluated records)."""
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        pop, archs = self.pending  # type: ignore[misc]
        F, G = record_arrays(self.problem, [known[a.id] for a in archs])
        kw = {"F": F, **({"G": G} if G.shape[1] else {})}
        Evaluator().eval(StaticProblem(self.pproblem, **kw), pop)
        self.algorithm.tell(infills=pop)
        self.pending = None


# -- LINAS --------------------------------------------------------------------------------

def fit_surrogate(space: SearchSpace, codes: np.ndarray, y: np.ndarray, seed: int = 0) -> Fn:
    """DyNAS-T's predictor: ridge or RBF SVR on the one-hot encoding (zero-variance
    columns dropped, targets scaled by a power of ten), whichever has the better
    cross-validated MAPE. Returns index rows -> predictions."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.svm import SVR

    X = space.one_hot_batch(codes).astype(np.float64)
    keep = np.flatnonzero(X.var(0) > 0)
    top = float(np.abs(y).max()) if len(y) else 0.0
    norm = 10.0 ** (np.floor(np.log10(top)) - 1.0) if top > 0 else 1.0
    z = y / norm
    if len(y) < 10 or not len(keep):
        model = Ridge(alpha=1.0).fit(X[:, keep], z) if len(keep) else None
    else:
        cv = KFold(n_splits=min(5, len(y)), shuffle=True, random_state=seed)
        grids = [(Ridge(), {"alpha": np.logspace(-1, 1, 7)}),
                 (SVR(kernel="rbf", gamma="auto", epsilon=0.0), {"C": np.logspace(0, 2, 7)})]
        fits = [GridSearchCV(est, grid, cv=cv, scoring="neg_mean_absolute_percentage_error").fit(X[:, keep], z)
                for est, grid in grids]
        model = max(fits, key=lambda g: g.best_score_).best_estimator_
    mean = float(z.mean()) if len(z) else 0.0

    def predict(c: np.ndarray) -> np.ndarray:
        if model is None:
            return np.full(len(c), mean * norm)
        return model.predict(space.one_hot_batch(c)[:, keep].astype(np.float64)) * norm

    return predict


@SEARCHERS.register("linas")
class LINAS(Searcher):
    def __init__(self, problem: Problem, cfg: SearchConfig, seed: int):
        super().__init__(problem, cfg, seed)
        self.genome = Genome(problem.space)
        self.rounds = 0
        self.inner: list[tuple[int, int]] = []  # per round: (generations, predictor evaluations)

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)  # the first population; later ones are proposed

    def propose(self, known: dict[str, dict[str, Any]], want: int) -> list[Arch] | None:
        if len(known) < min(self.cfg.population, 4):
            return None  # still validating the random first population
        self.rounds += 1
        return self.inner_search(known, want)

    def predictors(self, known: dict[str, dict[str, Any]]) -> dict[str, Fn]:
        """Every metric as index rows -> values: exact where computable, else a fitted predictor."""
        space = self.problem.space
        recs = list(known.values())
        codes = space.encode_batch([r["arch"] for r in recs])
        fns: dict[str, Fn] = {}
        for m in self.problem.all_metrics:
            if m.batch is not None and not m.expensive:
                fns[m.name] = m.batch
            else:
                fns[m.name] = fit_surrogate(space, codes, np.array([r["values"][m.name] for r in recs]),
                                            self.seed + self.rounds)
        return fns

    def inner_search(self, known: dict[str, dict[str, Any]], want: int) -> list[Arch]:
        from pymoo.optimize import minimize

        fns = self.predictors(known)
        seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def evaluate(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            F, G = objective_arrays(self.problem, {n: f(codes) for n, f in fns.items()})
            seen.append((codes, F, G))
            return F, G

        pop_size = self.cfg.linas.inner_population
        problem = self.genome.problem(len(self.problem.objectives), len(self.problem.constraints), evaluate)
        n_gen = max(1, -(-self.cfg.linas.inner_evals // pop_size))
        res = minimize(problem, self.genome.nsga2(pop_size), ("n_gen", n_gen), seed=self.seed * 1000 + self.rounds,
                       verbose=False)
        self.inner.append((len(seen), int(sum(len(c) for c, _, _ in seen))))
        final = res.pop
        G = final.get("G") if self.problem.constraints else np.zeros((len(final), 0))
        chosen = self._choose(problem, self.genome.codes(final.get("X")), final.get("F"), G, known, want)
        if len(chosen) < want:  # top up from every inner evaluation
            codes, F, G = (np.concatenate(a) for a in zip(*seen))
            taken = {**known, **{a.id: None for a in chosen}}
            chosen += self._choose(problem, codes, F, G, taken, want - len(chosen))
        return chosen

    def _choose(self, problem: Any, codes: np.ndarray, F: np.ndarray, G: np.ndarray, known: dict[str, Any],
                n: int) -> list[Arch]:
        """Up to ``n`` distinct archs of ``codes`` not in ``known``, by rank and crowding."""
        archs = self.problem.space.decode_batch(codes)
        first: dict[str, int] = {}
        for i, a in enumerate(archs):
            if a.id not in known:
                first.setdefault(a.id, i)
        rows = np.array(list(first.values()), dtype=np.int64)
        if len(rows) > n:
            pop = _population(rows[:, None], F[rows], G[rows])  # X carries the row index
            rows = np.rint(_select(problem, pop, n).get("X")[:, 0]).astype(np.int64)
        return [archs[i] for i in rows]
