"""The search's encoding and bookkeeping at scale: ordinal integer choices asked
define-by-run, duplicates answered from the records, the journal study file."""
from __future__ import annotations

import itertools
import json

import numpy as np
import optuna
import pytest

from nasplat.search.config import SearchConfig
from nasplat.search.encoding import TrialEncoding
from nasplat.search.metrics import MetricContext, make_metric, parse_constraint
from nasplat.search.runner import Problem, SearchLoop
from nasplat.space import load_space, space_from_dict

from _search_helpers import TINY_SPACE


@pytest.fixture(scope="module")
def tiny():
    return space_from_dict(TINY_SPACE)


def all_codes(space):
    return np.array(list(itertools.product(*[range(len(p.choices)) for p in space.params])))


def test_every_arch_round_trips_through_the_encoding(tiny):
    """All 2048 index vectors of the tiny space are the space's 800 networks; each one
    goes through an Optuna trial (enqueued, asked define-by-run) and comes back whole."""
    archs = {a.id: a for a in tiny.decode_batch(all_codes(tiny))}
    assert len(archs) == tiny.count() == 800
    enc = TrialEncoding(tiny)
    study = optuna.create_study(directions=["minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for a in archs.values():
        study.enqueue_trial(enc.params(a))
        t = study.ask()
        back = enc.suggest(t)
        assert back.id == a.id
        assert tiny.decode(tiny.encode(a)).id == a.id
        assert set(t.params) == {p.name for p in tiny.params if p.name in tiny.active(a)}
        study.tell(t, 0.0)
    for name, dist in enc.dists.items():  # every mbv3 choice is ordinal: an integer over its index
        assert isinstance(dist, optuna.distributions.IntDistribution) and dist.low == 0
        assert dist.high == len(tiny.param(name).choices) - 1


@pytest.mark.parametrize("name", ["ofa_mbv3_small", "ofa_mbv3", "darts", "elasticvit_small"])
def test_batch_encoding_matches_per_arch_on_shipped_spaces(repo, name):
    space = load_space(repo / "search_spaces" / f"{name}.yaml")
    rng = np.random.default_rng(0)
    raw = np.stack([rng.integers(0, len(p.choices), 40) for p in space.params], 1)
    archs = [space.decode(r) for r in raw]
    assert [a.id for a in space.decode_batch(raw)] == [a.id for a in archs]
    codes = space.encode_batch(archs)
    assert np.array_equal(codes, space.canonical(raw))
    for a, row, oh, sc in zip(archs, space.active_mask(raw), space.one_hot_batch(raw), space.stage_costs_batch(raw)):
        assert {p.name for p, on in zip(space.params, row) if on} == space.active(a)
        assert np.array_equal(oh, space.one_hot(a))
        assert np.array_equal(sc, np.asarray(space.stage_costs(a), dtype=np.float64))
    assert np.array_equal(space.macs_batch(codes), [space.macs(a) for a in archs])
    enc = TrialEncoding(space)
    categorical = [p for p in space.params if not p.ordinal and len(p.choices) > 1]
    assert all(isinstance(enc.dists[p.name], optuna.distributions.CategoricalDistribution) for p in categorical)
    assert bool(categorical) == (name == "darts")  # operation names are the only non-ordinal choices


def _problem(space, constraints=()):
    ctx = MetricContext(space)
    return Problem(space, [make_metric("macs", ctx), make_metric("params", ctx)],
                   [parse_constraint(c) for c in constraints])


@pytest.mark.parametrize("searcher", ["tpe", "nsga2"])
def test_inactive_choices_never_reach_the_sampler(repo, searcher):
    space = load_space(repo / "search_spaces" / "ofa_mbv3_digits.yaml")
    prob = _problem(space)
    cfg = SearchConfig(searcher=searcher, objectives=["macs", "params"], budget=24, population=8)
    study = optuna.create_study(directions=prob.directions)
    SearchLoop(prob, cfg, study, seed=0, quiet=True).run()
    expected = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}[searcher]
    assert isinstance(study.sampler, expected)  # the loop runs the searcher's sampler, not the study's default
    gated = [p.name for p in space.params if p.gate is not None]
    assert gated  # the space has conditional blocks
    skipped = 0
    for t in study.trials:
        arch = space.build(lambda p: t.params[p.name])  # every active choice was asked, nothing else
        assert set(t.params) == space.active(arch)
        skipped += len(space.params) - len(t.params)
    assert skipped > 0  # blocks beyond a stage's depth were really left out


def test_duplicates_do_not_count_against_the_budget(tiny):
    prob = _problem(tiny)
    budget = 200  # of 800 archs: random proposals repeat
    cfg = SearchConfig(searcher="random", objectives=["macs", "params"], budget=budget, population=20)
    study = optuna.create_study(directions=prob.directions)
    result = SearchLoop(prob, cfg, study, seed=0, quiet=True).run()
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    dups = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert result.duplicates == len(dups) > 0
    assert len(complete) == budget == len(result.records) == len(result.hv_history)
    assert len({t.user_attrs["arch_id"] for t in complete}) == budget
    by_number = {t.number: t for t in study.trials}
    for t in dups:  # a PRUNED trial pointing at the evaluated trial of the same network
        assert t.state == optuna.trial.TrialState.PRUNED
        first = by_number[t.user_attrs["duplicate_of"]]
        assert first.state == optuna.trial.TrialState.COMPLETE
        assert tiny.build(lambda p: t.params[p.name]).id == first.user_attrs["arch_id"]


def test_journal_study_has_metric_names_and_resumes(tmp_path):
    from _search_helpers import write_experiment
    from nasplat.experiment import load_experiment
    from nasplat.search.stage import run_search, storage_url
    from nasplat.search.storage import read_storage

    p = write_experiment(tmp_path, {"searcher": "nsga2", "objectives": ["macs", "params"], "budget": 12,
                                    "population": 4, "constraints": ["macs <= 800k"]}, save_supernet=False)
    exp = load_experiment(p)
    first = run_search(exp, quiet=True, print_table=False)
    spec = storage_url(exp)
    assert spec.endswith("search/study.journal")
    study = optuna.load_study(study_name=exp.config.name, storage=read_storage(spec))  # as optuna-dashboard reads it
    assert study.metric_names == ["macs", "params"]
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 12
    # a longer budget continues the same study: nothing evaluated twice
    exp.config = exp.config.model_copy(update={"search": exp.config.search.model_copy(update={"budget": 20})})
    again = run_search(exp, resume=True, quiet=True, print_table=False)
    assert again.new_evaluations == 8 and len({r["arch_id"] for r in again.records}) == 20
    assert {r["arch_id"] for r in first.records} <= {r["arch_id"] for r in again.records}


def test_journal_drops_a_torn_tail_and_refuses_a_second_writer(tmp_path):
    from nasplat.errors import UserError
    from nasplat.search.storage import StudyStorage

    path = tmp_path / "s.journal"
    st = StudyStorage(str(path))
    study = optuna.create_study(study_name="s", storage=st.storage, directions=["minimize"])
    for x in range(3):
        study.tell(study.ask({"x": optuna.distributions.IntDistribution(0, 9)}), float(x))
    assert path.stat().st_size == 0  # nothing written until a flush
    st.flush()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 4, "worker_id": "kil')  # a kill in the middle of a line
    again = StudyStorage(str(path))
    assert path.read_bytes() == whole
    assert len(optuna.load_study(study_name="s", storage=again.storage).trials) == 3
    study2 = optuna.load_study(study_name="s", storage=again.storage)
    study2.tell(study2.ask({"x": optuna.distributions.IntDistribution(0, 9)}), 5.0)
    with open(path, "a") as f:  # another process appends meanwhile
        f.write(json.dumps({"op_code": 3, "worker_id": "w", "study_id": 0, "system_attr": {"k": 1}}) + "\n")
    with pytest.raises(UserError, match="another process"):
        again.flush()


def test_an_rdb_url_still_holds_the_study(tmp_path):
    from _search_helpers import write_experiment
    from nasplat.experiment import load_experiment
    from nasplat.search.stage import run_search

    p = write_experiment(tmp_path, {"searcher": "random", "objectives": ["macs", "params"], "budget": 3,
                                    "population": 3}, save_supernet=False)
    exp = load_experiment(p)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    run_search(exp, storage=url, quiet=True, print_table=False)
    study = optuna.load_study(study_name=exp.config.name, storage=url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    assert study.metric_names == ["macs", "params"]
    assert not (exp.run_dir / "search" / "study.journal").exists()
