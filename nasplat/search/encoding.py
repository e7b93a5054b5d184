"""How an arch becomes the parameters of an Optuna trial.

Every choice with more than one option is one trial parameter named as in the arch:
an ordinal choice (resolution, depth, kernel, expand, width: numbers in ascending
order) is an integer over its choice index (``IntDistribution(0, n - 1)``), so
samplers see its order (TPE and GP model it as an integer, NSGA-II mutates it as
one); any other choice (an operation name) is categorical over its values. Choices
are asked define-by-run, in the space's order, and only while active: a block beyond
its stage's depth is never asked, so no sampler models a gene that does not change
the network. Single-option choices are not asked at all.
"""
from __future__ import annotations

from typing import Any

import optuna

from ..space import Arch, Param, SearchSpace


def distribution(p: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of a choice (see the module docstring)."""
    if p.ordinal:
        return optuna.distributions.IntDistribution(0, len(p.choices) - 1)
    return optuna.distributions.CategoricalDistribution(list(p.choices))


class TrialEncoding:
    """Arch <-> trial parameters for one space."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.dists = {p.name: distribution(p) for p in space.params if len(p.choices) > 1}

    def suggest(self, trial: optuna.Trial) -> Arch:
        """Ask ``trial`` for the active choices (define-by-run) and build the arch."""
        return self.space.build(lambda p: self._ask(trial, p))

    def _ask(self, trial: optuna.Trial, p: Param) -> int:
        dist = self.dists.get(p.name)
        if dist is None:
            return 0
        if isinstance(dist, optuna.distributions.IntDistribution):
            return trial.suggest_int(p.name, dist.low, dist.high)
        return p.choices.index(trial.suggest_categorical(p.name, dist.choices))

    def params(self, arch: Arch) -> dict[str, Any]:
        """The trial parameters of ``arch`` (active, multi-option choices), e.g. for
        ``study.enqueue_trial``."""
        active = self.space.active(arch)
        out: dict[str, Any] = {}
        for p in self.space.params:
            dist = self.dists.get(p.name)
            if dist is None or p.name not in active:
                continue
            out[p.name] = p.choices.index(arch[p.name]) if p.ordinal else arch[p.name]
        return out
