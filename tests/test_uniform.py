"""Strategy ``uniform`` (single-path one-shot)."""
from __future__ import annotations

import csv

import pytest
import torch

from nasplat.cli import main
from nasplat.train.engine import make_trainer
from nasplat.train.strategies import STRATEGIES, StepInfo

from _pada_helpers import one_thread  # noqa: F401  (autouse: 1 torch thread)
from _pada_helpers import tiny_ctx, tiny_experiment_yaml


def test_uniform_draws_are_seeded_per_step_and_cover_the_space(tmp_path):
    ctx = tiny_ctx(tmp_path, "uniform")
    a = STRATEGIES.get("uniform")(ctx, STRATEGIES.get("uniform").parse_options({}))
    b = STRATEGIES.get("uniform")(ctx, STRATEGIES.get("uniform").parse_options({}))
    infos = [StepInfo(0, e, s, 0) for e in range(3) for s in range(40)]
    da, db = [a.draw(i) for i in infos], [b.draw(i) for i in infos]
    assert da == db  # what every worker computes on its own
    assert len({x.id for x in da}) > 60  # distinct subnets, not one repeated
    for p in ctx.space.params:  # every value of every choice gets drawn
        assert {x[p.name] for x in da} == set(p.choices)
    ctx2 = tiny_ctx(tmp_path, "uniform", seed=1)
    c = STRATEGIES.get("uniform")(ctx2, STRATEGIES.get("uniform").parse_options({}))
    assert [c.draw(i) for i in infos[:20]] != da[:20]


def test_uniform_step_trains_only_the_drawn_subnet(tmp_path):
    ctx = tiny_ctx(tmp_path, "uniform")
    trainer = make_trainer(ctx, 64)
    strat = trainer.strategy
    x, y, idx = next(ctx.data.batches("train", 32))
    # find a step whose subnet is shallow in stage 1, so block 1 of stage 1 is unused
    step = next(s for s in range(100) if strat.draw(StepInfo(0, 0, s, 0))["d1"] == 1)
    out = strat.step(x, y, idx, StepInfo(0, 0, step, 0))
    assert len(out.archs) == 1 and out.resolution == ctx.space.resolution(out.archs[0])
    assert all(p.grad is None for p in strat.supernet.stages[1][1].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in strat.supernet.stages[1][0].parameters())


@pytest.mark.parametrize("strategy", ["uniform", "pada"])
def test_nasplat_train_runs_strategy(tmp_path, strategy):
    path = tiny_experiment_yaml(tmp_path, strategy, epochs=2)
    assert main(["train", str(path)]) == 0
    sn = tmp_path / "runs" / f"tiny_{strategy}" / "supernet"
    assert (sn / "supernet.safetensors").is_file()
    rows = list(csv.DictReader(open(sn / "train_log.csv")))
    steps = 898 // 64
    assert len(rows) == 2 * steps
    assert all(len(r["archs"].split(";")) == 1 for r in rows)  # one subnet per step
    assert len({r["archs"] for r in rows}) > steps  # and a different one most steps
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-steps:]) < sum(losses[:steps])  # it learns
