"""LINAS and NSGA-II on pymoo: a synthetic two-objective problem on the tiny space whose
Pareto front is known by enumerating all 800 networks."""
from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from nasplat.search.config import SearchConfig
from nasplat.search.metrics import Metric, MetricContext, hypervolume, make_metric, pareto_mask, parse_constraint
from nasplat.search.runner import Problem, SearchLoop
from nasplat.space import space_from_dict

from _search_helpers import TINY_SPACE


def synthetic_accuracy(space, a) -> float:
    """Larger kernels help, larger expands hurt, the larger resolution helps a little:
    a front of 9 networks that trades accuracy against MACs."""
    act = space.active(a)
    s = 0.5 + 0.03 * (a["r"] == 10)
    for i, j in itertools.product(range(2), range(2)):
        if f"k{i}_{j}" in act:
            s += 0.06 * (a[f"k{i}_{j}"] == 5) - 0.05 * (a[f"e{i}_{j}"] == 4) + 0.02
    return s


@pytest.fixture(scope="module")
def setup():
    space = space_from_dict(TINY_SPACE)
    codes = np.array(list(itertools.product(*[range(len(p.choices)) for p in space.params])))
    archs = list({a.id: a for a in space.decode_batch(codes)}.values())
    prob = Problem(space, [Metric("accuracy", "maximize", expensive=True), make_metric("macs", MetricContext(space))])
    losses = np.array([[prob.objectives[0].loss(synthetic_accuracy(space, a)),
                        prob.objectives[1].loss(float(space.macs(a)))] for a in archs])
    front = {archs[i].id for i in np.flatnonzero(pareto_mask(losses))}
    return space, prob, front, hypervolume(losses[pareto_mask(losses)], prob.reference())


def run(space, prob, searcher, seed, budget=80, **linas):
    def expensive(archs, done, failed=None):
        for i, a in enumerate(archs):
            done(i, {"accuracy": synthetic_accuracy(space, a)})

    cfg = SearchConfig(searcher=searcher, objectives=["accuracy", "macs"], budget=budget, population=16,
                       linas={"inner_evals": 2000, "inner_population": 40, **linas})
    study = optuna.create_study(directions=prob.directions)
    loop = SearchLoop(prob, cfg, study, seed=seed, expensive=expensive, quiet=True)
    return loop, loop.run(), study


def test_linas_reaches_the_known_front(setup):
    space, prob, front, best_hv = setup
    assert len(front) == 9
    loop, result, study = run(space, prob, "linas", seed=0)
    found = {r["arch_id"] for r in result.records}
    assert front <= found  # every front network, with 80 of 800 evaluated
    assert result.hv_history[-1] == pytest.approx(best_hv)
    # every round after the random first population ran the inner NSGA-II in full (2000 / 40 generations;
    # fewer than 2000 evaluations here, as duplicates of the 800 networks are eliminated)
    assert [g for g, _ in loop.searcher.inner] == [50] * ((80 - 16) // 16)
    assert all(40 * 10 < n <= 2000 for _, n in loop.searcher.inner)
    _, rand, _ = run(space, prob, "random", seed=0)  # the problem is not trivial at this budget
    assert not front <= {r["arch_id"] for r in rand.records}


def test_pymoo_nsga2_runs_with_constraints_and_resumes(setup):
    space, _, _, _ = setup
    ctx = MetricContext(space)
    prob = Problem(space, [Metric("accuracy", "maximize", expensive=True), make_metric("macs", ctx)],
                   [parse_constraint("macs <= 350k")])

    def expensive(archs, done, failed=None):
        for i, a in enumerate(archs):
            done(i, {"accuracy": synthetic_accuracy(space, a)})

    cfg = SearchConfig(searcher="pymoo_nsga2", objectives=["accuracy", "macs"], budget=48, population=16,
                       batch=12)  # rounds smaller than the population: a generation spans rounds
    study = optuna.create_study(directions=prob.directions)
    first = SearchLoop(prob, cfg, study, seed=1, expensive=expensive, quiet=True).run()
    ids = [r["arch_id"] for r in first.records]
    assert len(ids) == len(set(ids)) == 48
    feasible = [r for r in first.records if r["feasible"]]
    assert feasible and all(r["values"]["macs"] <= 350e3 for r in feasible)
    late = [r["feasible"] for r in first.records[16:]]
    assert np.mean(late) > np.mean([r["feasible"] for r in first.records[:16]])  # selection moves to feasible
    # a new loop on the same study continues from the archs it holds (no repeat evaluations)
    more = SearchLoop(prob, cfg, study, seed=2, expensive=expensive, quiet=True, budget=64).run()
    assert more.new_evaluations == 16 and len({r["arch_id"] for r in more.records}) == 64
