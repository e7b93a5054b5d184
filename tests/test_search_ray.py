"""The search on real Ray: evaluator actors, a killed actor, a SIGKILLed driver + --resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from _search_helpers import write_experiment


def _evaluated(study):
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
            and "duplicate_of" not in t.user_attrs]


def test_killing_an_evaluator_actor_loses_no_trial(ray_session, tmp_path):
    ray = ray_session
    from nasplat.experiment import load_experiment
    from nasplat.search.evaluator import EvaluatorPool, SupernetEvaluator
    from nasplat.search.runner import SearchLoop
    from nasplat.search.stage import build_problem, evaluator_init, load_supernet_weights

    p = write_experiment(tmp_path, {"searcher": "nsga2", "objectives": ["accuracy", "macs"], "budget": 8,
                                    "population": 4, "workers": 2, "max_restarts": 2,
                                    "calib_batch": 1})  # slow enough that a kill lands mid-evaluation
    exp = load_experiment(p)
    cfg = exp.config.search
    prob = build_problem(exp)
    init = evaluator_init(exp, cfg, load_supernet_weights(exp))
    pool = EvaluatorPool(2, init, cfg.max_restarts, cpus=1)
    pids = [w["pid"] for w in pool.locations()]  # both built: each takes an arch as soon as it is free
    killed: list[str] = []

    def expensive(archs, on_result, on_error=None):
        def cb(i, res):
            if not killed:  # the other actor is mid-evaluation: kill it
                killed.append(res["arch_id"])
                ray.kill(pool.actors[1 - pids.index(res["pid"])], no_restart=False)
            on_result(i, res)
        return pool.map(archs, cb)

    study = optuna.create_study(directions=prob.directions, storage=f"sqlite:///{tmp_path / 'study.db'}")
    try:
        result = SearchLoop(prob, cfg, study, seed=0, expensive=expensive, quiet=True).run()
    finally:
        pool.shutdown()
    assert killed and pool.restarts_seen >= 1  # an evaluation really was lost and redone
    assert not [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    ids = [t.user_attrs["arch_id"] for t in _evaluated(study)]
    assert len(ids) == len(set(ids)) == 8 == len(result.records)
    # the re-evaluated results are right: same as evaluating in this process
    local = SupernetEvaluator(**{**init, "weights": load_supernet_weights(exp)})
    for r in result.records[:3]:
        assert local.evaluate(r["arch"].to_json())["accuracy"] == pytest.approx(r["values"]["accuracy"])


def test_resume_after_driver_sigkill_evaluates_no_arch_twice(ray_session, tmp_path, capsys):
    ray = ray_session
    from nasplat.errors import UserError
    from nasplat.experiment import load_experiment
    from nasplat.search.stage import run_search, storage_url
    from nasplat.search.storage import read_storage

    budget = 30  # far beyond the kill point; calib_batch 1 makes each evaluation slow enough to poll
    p = write_experiment(tmp_path, {"searcher": "nsga2", "objectives": ["accuracy", "macs"], "budget": budget,
                                    "population": 4, "workers": 2, "constraints": ["macs <= 500k"],
                                    "calib_batch": 1})
    exp = load_experiment(p)
    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(p.parent.parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "nasplat.cli", "search", str(p), "--address", gcs],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    done_before = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name=exp.config.name, storage=read_storage(storage_url(exp)))
                done_before = len(_evaluated(study))
            except Exception:  # noqa: BLE001 - not created yet
                continue
            if done_before >= 5:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        err = proc.communicate(timeout=30)[1].decode()
    assert 5 <= done_before < budget, err[-2000:]
    study = optuna.load_study(study_name=exp.config.name, storage=read_storage(storage_url(exp)))
    before = {t.user_attrs["arch_id"] for t in _evaluated(study)}
    with pytest.raises(UserError, match="--resume"):  # a partial study is never silently restarted
        run_search(exp)
    result = run_search(exp, resume=True)
    study = optuna.load_study(study_name=exp.config.name, storage=read_storage(storage_url(exp)))
    ids = [t.user_attrs["arch_id"] for t in _evaluated(study)]
    assert len(ids) == len(set(ids)) == budget  # budget completed, no arch evaluated twice
    assert before <= set(ids)
    assert result.new_evaluations == budget - len(before)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    import pandas as pd

    trials = pd.read_csv(exp.run_dir / "search" / "trials.csv")
    assert len(trials) == budget and trials["arch_id"].is_unique
    front = pd.read_csv(exp.run_dir / "search" / "pareto.csv")
    assert len(front) >= 1 and front["feasible"].all() and (front["macs"] <= 500e3).all()
    assert (exp.run_dir / "search" / "pareto.png").stat().st_size > 1000
    assert "Pareto front" in capsys.readouterr().out
    # a completed study is left as it is
    again = run_search(exp)
    assert again.new_evaluations == 0 and len(again.records) == budget
