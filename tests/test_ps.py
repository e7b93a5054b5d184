"""The ``progressive_shrinking`` strategy: schedule, restrictions, draws, KD, summed gradients."""
from __future__ import annotations

import csv

import pytest
import torch
import yaml

from _ps_helpers import write_ps_exp
from nasplat.errors import UserError
from nasplat.experiment import load_experiment
from nasplat.supernet import resize
from nasplat.train.losses import label_smoothed_ce, soft_target_ce
from nasplat.train.run import build_trainer, train_experiment
from nasplat.train.strategies import StepInfo

NAMES = ["teacher", "kernel", "depth/1", "depth/2", "expand/1", "expand/2"]


def trainer_for(tmp_path, **kw):
    return build_trainer(load_experiment(write_ps_exp(tmp_path, **kw)))


def test_default_schedule_keeps_ofa_ratios_and_order(tmp_path):
    # train.epochs = OFA's total -> OFA's epochs; train.lr = OFA's teacher lr -> OFA's lrs
    tr = trainer_for(tmp_path, phases={}, epochs=605, lr=2.6, warmup_epochs=0)
    ph = tr.strategy.phases()
    assert [p.name for p in ph] == NAMES
    assert [p.epochs for p in ph] == [180, 125, 25, 125, 25, 125]
    assert [p.warmup_epochs for p in ph] == [0, 5, 0, 5, 0, 5]
    assert [p.lr for p in ph] == pytest.approx([2.6, 0.96, 0.08, 0.24, 0.08, 0.24])
    assert [p.subnets_per_step for p in ph] == [1, 1, 2, 2, 4, 4]
    assert ph[0].restriction.startswith("kernel {7}, expand {4}, depth {3}")
    assert ph[2].restriction.startswith("kernel {3,5,7}, expand {4}, depth {2,3}")
    assert ph[4].restriction.startswith("kernel {3,5,7}, expand {3,4}, depth {1,2,3}")
    assert ph[5].restriction == "kernel {3,5,7}, expand {2,3,4}, depth {1,2,3}, resolution {8,10}"
    # a small budget scales every phase down, same order, at least one epoch each
    small = trainer_for(tmp_path, phases={}, epochs=30, lr=0.1).strategy.phases()
    assert [p.epochs for p in small] == [9, 6, 1, 6, 1, 6]
    assert small[1].lr == pytest.approx(0.1 * 0.96 / 2.6)


def test_phase_overrides_and_skips(tmp_path):
    tr = trainer_for(tmp_path, phases={"teacher": {"epochs": 0}, "depth/1": {"epochs": 3, "lr": 0.5,
                                                                           "warmup_epochs": 1, "subnets": 3}},
                     options={"kd_ratio": 0.0})  # no teacher phase: no KD (tests/test_ofa.py)
    ph = tr.strategy.phases()
    assert [p.name for p in ph] == NAMES[1:]
    d1 = ph[1]
    assert (d1.epochs, d1.lr, d1.warmup_epochs, d1.subnets_per_step) == (3, 0.5, 1, 3)


def test_bad_options_are_one_line_user_errors(tmp_path):
    p = write_ps_exp(tmp_path, phases={"depth/3": {"epochs": 1}})
    with pytest.raises(UserError, match=r"train\.options\.phases"):
        load_experiment(p)
    cfg = yaml.safe_load(p.read_text())
    cfg["train"]["options"] = {"phases": {"kernel": {"epochs": -1}}}
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match="epochs"):
        load_experiment(p)


def test_draws_respect_restriction_and_agree_across_workers(tmp_path):
    a, b = trainer_for(tmp_path).strategy, trainer_for(tmp_path).strategy  # two "workers"
    space = a.ctx.space
    for pi, phase in enumerate(a.phases()):
        a.begin_phase(pi, phase)
        b.begin_phase(pi, phase)
        allowed = a._allowed_choices(phase.name)
        seen = set()
        for step in range(12):
            info = StepInfo(pi, 2, step, 0)
            r = a.resolution(info)
            assert r == b.resolution(info) and r in space.resolutions()
            for j in range(phase.subnets_per_step):
                arch = a.sample(info, j, r)
                assert arch == b.sample(info, j, r) and arch["r"] == r
                for name in space.active(arch):
                    assert arch[name] in allowed[name], (phase.name, name)
                seen.add(arch.id)
        if phase.name == "teacher":
            assert len({a.sample(StepInfo(pi, 0, s, 0), 0, 10).id for s in range(5)}) == 1
        else:
            assert len(seen) > 6  # the draws vary with step and j
    # kernel phase: depth and expand held at the max, kernels vary
    a.begin_phase(1, a.phases()[1])
    ks = set()
    for s in range(10):
        arch = a.sample(StepInfo(1, 0, s, 0), 0, 10)
        assert arch["d0"] == 3 and arch["d1"] == 3 and all(arch[f"e{i}_{j}"] == 4 for i in (0, 1) for j in range(3))
        ks.update(arch[f"k{i}_{j}"] for i in (0, 1) for j in range(3))
    assert ks == {3, 5, 7}


def test_step_sums_subnet_gradients_with_kd_from_frozen_teacher(tmp_path):
    tr = trainer_for(tmp_path)
    strat, net = tr.strategy, tr.model
    phases = strat.phases()
    strat.begin_phase(0, phases[0])
    assert strat.teacher is None
    x, y, idx = next(tr.ctx.data.batches("train", 32))
    strat.begin_phase(1, phases[1])  # kernel: the teacher is a copy of the net as it is now
    teacher = strat.teacher
    assert teacher is not None and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), net.parameters()))
    strat.begin_phase(4, phases[4])  # expand/1: 4 subnets per step, same teacher
    assert strat.teacher is teacher
    before = [p.detach().clone() for p in teacher.parameters()]
    info = StepInfo(4, 0, 3, 0)
    torch.manual_seed(0)
    net.zero_grad(set_to_none=True)
    out = strat.step(x, y, idx, info)
    got = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    assert len(out.archs) == 4 and out.resolution in (8, 10)
    # reference: the same 4 subnets, each CE + KD on the teacher's train-mode soft targets
    torch.manual_seed(0)
    net.zero_grad(set_to_none=True)
    xr = resize(x, out.resolution).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        soft = torch.softmax(teacher.train()(xr), 1)
    total = 0.0
    for arch in out.archs:
        net.set_active(arch)
        o = net(xr)
        loss = label_smoothed_ce(o, y, 0.1) + soft_target_ce(o, soft)
        loss.backward()
        total += float(loss.detach())
    assert out.loss == pytest.approx(total / 4, rel=1e-5)
    ref = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-6)
    # the teacher's weights never move and get no gradient
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert all(p.grad is None for p in teacher.parameters())


def test_kd_ratio_zero_has_no_teacher(tmp_path):
    p = write_ps_exp(tmp_path)
    cfg = yaml.safe_load(p.read_text())
    cfg["train"]["options"]["kd_ratio"] = 0.0
    p.write_text(yaml.safe_dump(cfg))
    strat = build_trainer(load_experiment(p)).strategy
    strat.begin_phase(1, strat.phases()[1])
    assert strat.teacher is None


def test_all_six_phases_run_log_and_checkpoint(tmp_path):
    exp = load_experiment(write_ps_exp(tmp_path, phases={"teacher": {"epochs": 2, "lr": 0.2},
                                                         **{n: {"epochs": 1} for n in NAMES[1:]}}))
    final = train_experiment(exp)
    d = exp.run_dir / "supernet"
    assert final.exists()
    for i, n in enumerate(NAMES):
        assert (d / f"phase_{i}_{n.replace('/', '-')}.safetensors").exists()
    rows = list(csv.DictReader(open(d / "train_log.csv")))
    per_phase = {n: [r for r in rows if r["phase"] == n] for n in NAMES}
    subnets = {n: {len(r["macs"].split(";")) for r in rs} for n, rs in per_phase.items()}
    assert subnets == {n: {s} for n, s in zip(NAMES, [1, 1, 2, 2, 4, 4])}
    assert {r["resolution"] for r in rows} == {"8", "10"}
    # teacher rows train the full net only
    full = exp.space.max_arch()
    assert all(r["archs"].split(";")[0] in {exp.space.arch({**full, "r": res}).id for res in (8, 10)}
               for r in per_phase["teacher"])
    # lr: warm-up from 0 in the teacher phase, cosine to ~0 at each phase end, restarted per phase
    lrs = [float(r["lr"]) for r in per_phase["kernel"]]
    assert lrs[-1] < 0.1 * max(lrs)
    assert float(per_phase["teacher"][-1]["loss"]) < float(per_phase["teacher"][0]["loss"])
