"""The asynchronous evaluator pool on real Ray actors: a slow evaluation does not hold
back the others (work goes to whichever evaluator is free), one past the timeout fails
alone as EvaluationTimeout and its evaluator is restarted, one that raises keeps its
original exception, and the pool goes on evaluating afterwards."""
from __future__ import annotations

import sys
import time

import numpy as np

from _search_helpers import write_experiment
from nasplat.search.evaluator import EvaluationTimeout, EvaluatorPool, SupernetEvaluator
from nasplat.space import Arch


class Misbehaving(SupernetEvaluator):
    """Sleeps on the arch ``slow``, raises on the arch ``bad``, evaluates the others."""

    def __init__(self, slow: str, bad: str, **init):
        super().__init__(**init)
        self.slow, self.bad = slow, bad

    def evaluate(self, arch_json: str):
        arch = self.space.arch(Arch.from_json(arch_json))
        if arch.id == self.slow:
            time.sleep(300)
        if arch.id == self.bad:
            raise ValueError(f"no memory left for {arch.id}")
        return super().evaluate(arch_json)


def test_async_pool_timeout_and_failures_cost_one_arch_each(ray_session, tmp_path):
    ray = ray_session
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable in workers
    from nasplat.experiment import load_experiment
    from nasplat.search.stage import evaluator_init, load_supernet_weights

    exp = load_experiment(write_experiment(tmp_path, {"workers": 2, "calib_batch": 64, "val_images": 100}))
    rng = np.random.default_rng(0)
    archs = list({a.id: a for a in (exp.space.sample(rng) for _ in range(40))}.values())[:7]
    slow, bad, fast = archs[0], archs[1], archs[2:]
    init = {**evaluator_init(exp, exp.config.search, load_supernet_weights(exp)), "slow": slow.id, "bad": bad.id}
    pool = EvaluatorPool(2, init, max_restarts=2, timeout_s=8, evaluator=Misbehaving)
    try:
        pool.locations()  # both built: the timeout counts evaluation time only
        assert pool.free_slots == 2
        pool.submit("slow", slow)
        pool.submit("f0", fast[0])
        assert pool.free_slots == 0  # one arch per evaluator: the next waits in the driver
        for i, a in enumerate(fast[1:3], 1):
            pool.submit(f"f{i}", a)
        order = [pool.next_result() for _ in range(4)]
        # the free evaluator took every fast arch while the other sat on the slow one
        assert [d.key for d in order[:3]] == ["f0", "f1", "f2"] and all(d.error is None for d in order[:3])
        assert order[3].key == "slow" and isinstance(order[3].error, EvaluationTimeout)
        assert "longer than 8 s" in order[3].message
        pool.submit("bad", bad)
        for i, a in enumerate(fast[3:], 3):
            pool.submit(f"f{i}", a)
        rest = {d.key: d for d in iter(pool.next_result, None)}
        assert set(rest) == {"bad", "f3", "f4"}
        assert type(rest["bad"].error) is ValueError  # the original exception, not a Ray wrapper
        assert rest["bad"].message == f"ValueError: no memory left for {bad.id}"
        assert all(rest[k].error is None and 0 <= rest[k].result["accuracy"] <= 1 for k in ("f3", "f4"))
        assert pool.pending == 0 and pool.next_result() is None
        # the results are the evaluator's, unchanged by the failures around them
        local = SupernetEvaluator(**{**evaluator_init(exp, exp.config.search, load_supernet_weights(exp))})
        assert rest["f3"].result["accuracy"] == local.evaluate(fast[3].to_json())["accuracy"]
    finally:
        pool.shutdown()


def test_an_evaluation_that_raises_fails_that_trial_only_and_says_why(ray_session, tmp_path, capsys):
    import optuna

    ray = ray_session
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from nasplat.experiment import load_experiment
    from nasplat.search.runner import SearchLoop
    from nasplat.search.stage import build_problem, evaluator_init, load_supernet_weights

    exp = load_experiment(write_experiment(tmp_path, {"searcher": "random", "objectives": ["accuracy", "macs"],
                                                      "budget": 6, "population": 3, "workers": 2,
                                                      "calib_batch": 64, "val_images": 100}))
    cfg, prob = exp.config.search, build_problem(exp)
    study = optuna.create_study(directions=prob.directions)
    # the arch the random searcher proposes first raises inside its actor
    first = SearchLoop(prob, cfg, optuna.create_study(directions=prob.directions), seed=0)._ask_round(1)[1][0]
    init = {**evaluator_init(exp, cfg, load_supernet_weights(exp)), "slow": "", "bad": first.id}
    pool = EvaluatorPool(2, init, max_restarts=0, evaluator=Misbehaving)
    try:
        result = SearchLoop(prob, cfg, study, seed=0, expensive=pool.map, quiet=True).run()
    finally:
        pool.shutdown()
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert [t.user_attrs["arch_id"] for t in failed] == [first.id]
    assert failed[0].user_attrs["error"] == f"ValueError: no memory left for {first.id}"
    assert len(result.records) == 6 and first.id not in {r["arch_id"] for r in result.records}
    err = capsys.readouterr().err
    assert f"evaluation of arch {first.id} failed" in err and "ValueError: no memory left" in err
