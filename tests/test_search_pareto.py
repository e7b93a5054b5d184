"""Pareto front, hypervolume, constraints and the search loop on cheap metrics
(real Optuna studies, in memory and SQLite)."""
from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from nasplat.errors import UserError
from nasplat.search.config import SearchConfig
from nasplat.search.metrics import (Metric, MetricContext, hypervolume, make_metric, nondominated_ranks,
                                    pareto_mask, parse_constraint)
from nasplat.search.runner import Problem, SearchLoop, annotate
from nasplat.space import Arch, space_from_dict

from _search_helpers import TINY_SPACE


def dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def test_pareto_mask_hand_built():
    pts = np.array([[1, 5], [2, 3], [3, 3], [4, 1], [2, 4], [5, 5], [4, 1], [1.5, 4.5]])
    mask = pareto_mask(pts)
    # by hand: (1,5) (2,3) (4,1) twice (duplicates do not dominate each other) (1.5,4.5)
    assert mask.tolist() == [True, True, False, True, False, False, True, True]
    front, rest = pts[mask], pts[~mask]
    for a, b in itertools.permutations(front, 2):  # non-dominated
        assert not dominates(a, b)
    for p in rest:  # complete: everything left out is dominated by a front member
        assert any(dominates(f, p) for f in front)
    assert nondominated_ranks(pts).tolist() == [0, 0, 1, 0, 1, 2, 0, 0]


def test_pareto_mask_random_sets_are_exact():
    rng = np.random.default_rng(1)
    for _ in range(20):
        pts = rng.integers(0, 6, size=(40, 3)).astype(float)
        mask = pareto_mask(pts)
        for i in range(len(pts)):
            dominated = any(dominates(pts[j], pts[i]) for j in range(len(pts)) if j != i)
            assert mask[i] == (not dominated)


def test_hypervolume_known_values():
    ref = np.array([1.0, 1.0])
    assert hypervolume(np.array([[0.5, 0.5]]), ref) == pytest.approx(0.25)
    assert hypervolume(np.array([[0.2, 0.6], [0.6, 0.2], [0.7, 0.7]]), ref) == pytest.approx(0.32 + 0.32 - 0.16)
    assert hypervolume(np.array([[1.5, 0.1]]), ref) == 0.0


@pytest.mark.parametrize("text,metric,op,limit", [
    ("macs <= 50M", "macs", "<=", 50e6), ("latency@local-cpu <= 5ms", "latency@local-cpu", "<=", 5.0),
    ("latency@pixel7 < 800us", "latency@pixel7", "<=", 0.8), ("accuracy >= 90%", "accuracy", ">=", 0.9),
    ("params<=1.5e6", "params", "<=", 1.5e6), ("macs <= 2 MMACs", "macs", "<=", 2e6),
])
def test_parse_constraint(text, metric, op, limit):
    c = parse_constraint(text)
    assert (c.metric, c.op) == (metric, op) and c.limit == pytest.approx(limit)
    assert c.ok(limit) and not c.ok(limit * 1.01 if op == "<=" else limit * 0.99)


@pytest.mark.parametrize("bad", ["macs <= fifty", "macs == 5M", "latency@cpu <= 5M", "macs <= 5ms", "macs <= 5Q"])
def test_parse_constraint_errors_are_one_line(bad):
    with pytest.raises(UserError) as e:
        parse_constraint(bad, "exp.yaml")
    assert "\n" not in e.value.line() and e.value.line().startswith("exp.yaml")


def _problem(constraints=()):
    space = space_from_dict(TINY_SPACE)
    ctx = MetricContext(space)
    objs = [Metric("accuracy", "maximize"), make_metric("macs", ctx)]
    return space, Problem(space, objs, [parse_constraint(c) for c in constraints])


def test_constraints_exclude_infeasible_archs_from_the_front():
    space, prob = _problem(["macs <= 300k"])
    rng = np.random.default_rng(0)
    archs = list({a.id: a for a in (space.sample(rng) for _ in range(60))}.values())
    records = []
    for i, a in enumerate(archs):
        macs = float(space.macs(a))
        values = {"accuracy": 0.5 + 0.4 * macs / prob.objectives[1].scale, "macs": macs}
        records.append({"number": i, "arch_id": a.id, "arch": a, "values": values,
                        "feasible": prob.feasible(values)})
    assert any(r["feasible"] for r in records) and not all(r["feasible"] for r in records)
    annotate(prob, records)
    front = [r for r in records if r["pareto"]]
    assert front and all(r["values"]["macs"] <= 300e3 for r in front)
    # the biggest (most accurate) arch is infeasible, so it is not on the front
    best = max(records, key=lambda r: r["values"]["accuracy"])
    assert not best["feasible"] and not best["pareto"]
    feas = [r for r in records if r["feasible"]]
    for r in feas:  # complete over the feasible ones
        on = r["pareto"]
        dom = any(dominates(prob.losses(f["values"]), prob.losses(r["values"])) for f in feas)
        assert on == (not dom)


@pytest.mark.parametrize("searcher", ["nsga2", "tpe", "random", "linas", "gp"])
def test_search_loop_cheap_metrics_no_arch_twice(searcher, repo):
    from nasplat.space import load_space

    space = load_space(repo / "search_spaces" / "ofa_mbv3_digits.yaml")
    ctx = MetricContext(space)
    prob = Problem(space, [make_metric("macs", ctx), make_metric("params", ctx)], [parse_constraint("macs <= 8M")])
    budget = 12 if searcher == "gp" else 40
    cfg = SearchConfig(searcher=searcher, objectives=["macs", "params"], budget=budget, population=8,
                       linas={"inner_evals": 200, "inner_population": 20})
    study = optuna.create_study(directions=prob.directions)
    result = SearchLoop(prob, cfg, study, seed=0, quiet=True).run()
    ids = [r["arch_id"] for r in result.records]
    assert len(ids) == budget == len(set(ids))
    evaluated = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                 and "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == budget
    assert len({t.user_attrs["arch_id"] for t in evaluated}) == budget
    for r in result.records:  # stored values are the true ones
        assert r["values"]["macs"] == space.macs(r["arch"])
        assert r["feasible"] == (space.macs(r["arch"]) <= 8e6)
    for t in evaluated:  # constraints reach Optuna
        assert (t.constraints[next(iter(t.constraints))] <= 0) == t.user_attrs["feasible"]
    assert result.hv_history == sorted(result.hv_history)
    assert result.duplicates < budget  # a big space: few repeats


def test_search_config_rejects_unknown_keys(tmp_path):
    from _search_helpers import write_experiment
    from nasplat.experiment import load_experiment

    p = write_experiment(tmp_path, {"searcher": "nsga2", "budgett": 3}, save_supernet=False)
    with pytest.raises(UserError) as e:
        load_experiment(p)
    assert "search.budgett" in e.value.line()


def test_unknown_searcher_and_metric_are_user_errors(tmp_path):
    from _search_helpers import write_experiment
    from nasplat.experiment import load_experiment
    from nasplat.search.stage import build_problem

    for search, field in [({"searcher": "nsga3"}, "search.searcher"),
                          ({"objectives": ["accuracy", "flops"]}, "search.objectives"),
                          ({"constraints": ["macs <= 5 parsecs"]}, "search.constraints.0")]:
        p = write_experiment(tmp_path, search, save_supernet=False)
        with pytest.raises(UserError) as e:
            build_problem(load_experiment(p))
        assert field in e.value.line()


def test_arch_json_roundtrip_in_outputs(tmp_path):
    from nasplat.search.outputs import write_outputs
    from nasplat.search.runner import SearchResult

    space, prob = _problem()
    rng = np.random.default_rng(3)
    recs = []
    for i in range(10):
        a = space.sample(rng)
        v = {"accuracy": float(rng.random()), "macs": float(space.macs(a))}
        recs.append({"number": i, "arch_id": a.id, "arch": a, "values": v, "feasible": True})
    hv = annotate(prob, recs)
    paths = write_outputs(SearchResult(recs, hv, prob), tmp_path)
    import pandas as pd

    df = pd.read_csv(paths["pareto"])
    assert len(df) == sum(r["pareto"] for r in recs) > 0
    for _, row in df.iterrows():
        a = space.arch(Arch.from_json(row["arch"]))
        assert a.id == row["arch_id"]
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(paths["trials"])) == 10
