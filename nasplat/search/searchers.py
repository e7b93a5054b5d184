"""Searchers, registered by the name used in ``search.searcher``.

``nsga2``, ``tpe``, ``gp`` and ``random`` are Optuna samplers driving the study
directly (``NSGAIISampler``, multi-objective ``TPESampler``, ``GPSampler`` (logEHVI),
``RandomSampler``). Constraints reach every sampler through Optuna 5's
``Trial.set_constraint`` (the loop sets them before ``tell``); Optuna 5 deprecates
``constraints_func``, so no sampler is given one.

``linas`` is DyNAS-T's LINAS loop: the first population is random and validated for
real; then, every round, predictors are refitted on all validated archs, an Optuna
NSGA-II runs on the predictors (cheap objectives such as MACs or predicted latency are
computed exactly) for ``linas.inner_evals`` evaluations, and the best-ranked archs of
that inner search that were never validated are enqueued in the outer study and
validated for real. Deviation from DyNAS-T: the next population is taken from the
non-dominated ranking of *all* inner evaluations (not only NSGA-II's last
population), so no inner-search result is wasted and known archs are skipped; the
accuracy predictor is an RBF SVR on the one-hot arch encoding (DyNAS-T ships several
regressors; its MobileNetV3 accuracy predictor is an SVR too).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Any, Callable, ClassVar

import numpy as np
import optuna

from ..registry import Registry
from ..space import Arch
from .metrics import nondominated_ranks

class Searcher(ABC):
    """The interface: a sampler for the outer study and an optional per-round hook."""

    name: ClassVar[str]  # set by the registry

    def __init__(self, problem: Any, cfg: Any, seed: int):
        self.problem, self.cfg, self.seed = problem, cfg, seed

    @abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of the outer study."""

    def before_round(self, study: optuna.Study, known: dict[str, dict[str, Any]], want: int) -> None:
        """Called before each round of asks (``known``: arch id -> record)."""


SEARCHERS: Registry[type[Searcher]] = Registry("searcher", name_attr="name")


@SEARCHERS.register("nsga2")
class NSGA2(Searcher):
    def sampler(self) -> optuna.samplers.BaseSampler:
        opts = {"population_size": self.cfg.population, **self.cfg.options}
        return optuna.samplers.NSGAIISampler(seed=self.seed, **opts)


@SEARCHERS.register("tpe")
class TPE(Searcher):
    def sampler(self) -> optuna.samplers.BaseSampler:
        opts = {"multivariate": True, "n_startup_trials": 10, "constant_liar": True, **self.cfg.options}
        return optuna.samplers.TPESampler(seed=self.seed, **opts)


@SEARCHERS.register("gp")
class GP(Searcher):
    def sampler(self) -> optuna.samplers.BaseSampler:
        opts = {"n_startup_trials": 10, **self.cfg.options}
        return optuna.samplers.GPSampler(seed=self.seed, **opts)


@SEARCHERS.register("random")
class Random(Searcher):
    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


def fit_accuracy_predictor(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """RBF SVR on standardised targets (C chosen by 3-fold CV once there are enough points)."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVR

    mu, sd = float(y.mean()), float(y.std()) or 1.0
    z = (y - mu) / sd
    if len(y) >= 15:
        model = GridSearchCV(SVR(kernel="rbf", gamma="scale", epsilon=0.05),
                             {"C": [0.3, 1.0, 3.0, 10.0]}, cv=3).fit(X, z).best_estimator_
    else:
        model = SVR(kernel="rbf", gamma="scale", C=1.0, epsilon=0.05).fit(X, z)
    return lambda Xn: model.predict(Xn) * sd + mu


@SEARCHERS.register("linas")
class LINAS(Searcher):
    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)  # the first population; later ones are enqueued

    def before_round(self, study: optuna.Study, known: dict[str, dict[str, Any]], want: int) -> None:
        if len(known) < min(self.cfg.population, 4):
            return  # still validating the random first population
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if waiting:
            return  # a population enqueued before an interruption is still to be validated
        for arch in self.propose(known, want):
            study.enqueue_trial(dict(arch), skip_if_exists=False)

    def propose(self, known: dict[str, dict[str, Any]], want: int) -> list[Arch]:
        prob = self.problem
        space = prob.space
        records = list(known.values())
        X = np.stack([space.one_hot(r["arch"]) for r in records])
        predictors: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        for m in prob.all_metrics:
            if m.expensive:
                predictors[m.name] = fit_accuracy_predictor(X, np.array([r["values"][m.name] for r in records]))
        rnd = len(known) // max(1, self.cfg.population)
        inner = optuna.create_study(
            directions=prob.directions,
            sampler=optuna.samplers.NSGAIISampler(population_size=self.cfg.linas.inner_population,
                                                  seed=self.seed * 1000 + rnd))
        dists = prob.distributions()
        archs_all: list[Arch] = []
        vals_all: list[dict[str, float]] = []
        budget = self.cfg.linas.inner_evals
        pop = self.cfg.linas.inner_population
        while len(archs_all) < budget:
            trials = [inner.ask(dists) for _ in range(min(pop, budget - len(archs_all)))]
            archs = [space.arch(t.params) for t in trials]
            vals = prob.cheap_values(archs)
            if predictors:
                Xn = np.stack([space.one_hot(a) for a in archs])
                for name, f in predictors.items():
                    for v, p in zip(vals, f(Xn)):
                        v[name] = float(p)
            for t, v in zip(trials, vals):
                inner.tell(t, [v[m.name] for m in prob.objectives])
            archs_all += archs
            vals_all += vals
        # rank: feasible (predicted) first, then non-dominated fronts, then crowding by order
        uniq: dict[str, int] = {}
        for i, a in enumerate(archs_all):
            if a.id not in known and a.id not in uniq:
                uniq[a.id] = i
        idx = np.array(list(uniq.values()), dtype=int)
        if not len(idx):
            return []
        losses = np.array([prob.losses(vals_all[i]) for i in idx])
        infeasible = np.array([not prob.feasible(vals_all[i]) for i in idx])
        ranks = nondominated_ranks(losses) + infeasible * (len(idx) + 1)
        order = np.lexsort((np.arange(len(idx)), ranks))
        # within the last front taken, spread picks along the first objective
        chosen: list[int] = []
        for r in np.unique(ranks[order]):
            members = [int(j) for j in order if ranks[j] == r]
            room = want - len(chosen)
            if room <= 0:
                break
            if len(members) > room:
                members.sort(key=lambda j: losses[j][0])
                pick = np.linspace(0, len(members) - 1, room).round().astype(int)
                members = [members[p] for p in dict.fromkeys(pick.tolist())]
            chosen += members
        return [archs_all[idx[j]] for j in chosen[:want]]
