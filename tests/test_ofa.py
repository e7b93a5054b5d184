"""OFA's training and evaluation recipe: BN recalibration as OFA's set_running_statistics,
calibration images drawn from the training split, the teacher without dropout, KD never
from a random teacher."""
from __future__ import annotations

import copy
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from _tiny_space import TINY_SPACE
from nasplat.data import DataConfig, load_data
from nasplat.space import space_from_dict
from nasplat.supernet import build_supernet, recalibrate_bn
from nasplat.supernet.bn import calibration_batches


def tiny_mbv3_space():
    return space_from_dict(yaml.safe_load(textwrap.dedent(TINY_SPACE)))


@torch.no_grad()
def ofa_formula_reference(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, tuple]:
    """OFA's formula, written out: every BN normalises each batch with the batch's own
    mean and biased variance; its statistics are the batch-size-weighted averages."""
    model = copy.deepcopy(model).eval()
    stats: dict[str, list] = {}
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            stats[name] = []

            def fwd(x, m=m, rec=stats[name]):
                mean = x.mean(dim=(0, 2, 3))
                var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
                rec.append((x.shape[0], mean, var))
                return F.batch_norm(x, mean, var, m.weight, m.bias, False, 0.0, m.eps)

            m.forward = fwd
    for x in batches:
        model(x)
    out = {}
    for name, rec in stats.items():
        n = sum(r[0] for r in rec)
        out[name] = (sum(r[0] * r[1] for r in rec) / n, sum(r[0] * r[2] for r in rec) / n)
    return out


def _perturbed_static(seed: int):
    sp = tiny_mbv3_space()
    torch.manual_seed(seed)
    net = build_supernet(sp)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
    arch = sp.sample(np.random.default_rng(seed))
    return sp, net, arch


def test_ofa_recalibration_equals_ofa_formula_and_official_code():
    sp, net, arch = _perturbed_static(1)
    static = net.extract(arch).train()  # the mode must not matter and must be restored
    r = sp.resolution(arch)
    g = torch.Generator().manual_seed(2)
    # uneven batches: weighting by batch size and the biased variance both show
    batches = [torch.randn(n, sp.config.input_channels, r, r, generator=g) * s + s
               for n, s in ((7, 1.0), (7, 2.0), (3, 0.5))]
    ref = ofa_formula_reference(static, batches)
    official = copy.deepcopy(static)
    tracked = {n: int(m.num_batches_tracked) for n, m in static.named_modules() if isinstance(m, _BatchNorm)}
    assert recalibrate_bn(static, batches) == 17
    assert static.training and all(m.training for m in static.modules())
    bns = {n: m for n, m in static.named_modules() if isinstance(m, _BatchNorm)}
    assert len(bns) > 10 and bns.keys() == ref.keys()
    for name, m in bns.items():
        mean, var = ref[name]
        torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var, var, rtol=1e-4, atol=1e-5)
        assert int(m.num_batches_tracked) == tracked[name] and m.momentum == 0.1
    # the cumulative mode is another function (unbiased variance, unweighted batches)
    cum = copy.deepcopy(official)
    recalibrate_bn(cum, batches, mode="cumulative")
    name = next(iter(bns))
    assert not torch.allclose(dict(cum.named_modules())[name].running_var, bns[name].running_var, rtol=1e-3)
    # the official code on the same static network and batches
    pytest.importorskip("ofa", reason="the `ofa` package (test extra) is needed for the official reference")
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    set_running_statistics(official, [(x, None) for x in batches])
    for name, m in dict(official.named_modules()).items():
        if isinstance(m, _BatchNorm):
            torch.testing.assert_close(bns[name].running_mean, m.running_mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(bns[name].running_var, m.running_var, rtol=1e-4, atol=1e-5)


def test_calibration_images_are_random_training_images_drawn_with_the_seed():
    data = load_data(DataConfig(name="digits", resolution=8), 1)
    train_x = data.train.x
    a = calibration_batches(data, 300, seed=7, batch_size=128)
    assert [len(x) for x in a] == [128, 128, 44]
    imgs = torch.cat(a)
    # each one is a training image (never a val image), without repeats
    flat = train_x.flatten(1)
    idx = [int(torch.nonzero((flat == x.flatten()).all(1))[0]) for x in imgs[:40]]
    assert len(set(idx)) == 40
    val = data.val.x.flatten(1)
    assert not any(bool((val == x.flatten()).all(1).any()) for x in imgs[:40])
    assert torch.equal(imgs, torch.cat(calibration_batches(data, 300, seed=7, batch_size=128)))
    assert not torch.equal(imgs, torch.cat(calibration_batches(data, 300, seed=8, batch_size=128)))
    # a random draw, not the first training images
    assert idx != list(range(40))
    # OFA's 2000 by default, capped at the training split (digits: 1438 images)
    assert sum(len(x) for x in calibration_batches(data)) == len(train_x) == 1438


# -- the PS teacher and recipe -----------------------------------------------------------
def _ps_trainer(tmp_path, **kw):
    from _ps_helpers import write_ps_exp
    from nasplat.experiment import load_experiment
    from nasplat.train.run import build_trainer

    tmp_path.mkdir(parents=True, exist_ok=True)
    return build_trainer(load_experiment(write_ps_exp(tmp_path, **kw)))


def test_teacher_runs_without_dropout(tmp_path):
    tr = _ps_trainer(tmp_path)
    strat, net = tr.strategy, tr.model
    assert net.head.dropout.p > 0  # the space's head has dropout: the student keeps it
    strat.begin_phase(0, strat.phases()[0])
    strat.begin_phase(1, strat.phases()[1])
    x = next(tr.ctx.data.batches("train", 16))[0]
    teacher = strat.teacher
    assert teacher.training
    with torch.no_grad():
        a, b = teacher(x), teacher(x)
        net.train().set_active(net.space.max_arch())
        s1, s2 = net(x), net(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(s1, s2)  # the same network with its dropout on differs call to call


def test_teacher_checkpoint_replaces_the_teacher_phase(tmp_path):
    from nasplat.checkpoint import save_weights

    src = _ps_trainer(tmp_path / "a").model
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01)
    ckpt = tmp_path / "teacher.safetensors"
    save_weights(ckpt, src, {"space_hash": src.space.hash()})
    tr = _ps_trainer(tmp_path / "b", phases={}, options={"teacher": str(ckpt)})
    strat = tr.strategy
    assert [p.name for p in strat.phases()][0] == "kernel"  # the teacher phase is skipped
    strat.begin_phase(0, strat.phases()[0])
    t = strat.teacher.state_dict()
    assert all(torch.equal(t[k], v) for k, v in src.state_dict().items())
    assert not torch.equal(t["stem.0.weight"], tr.model.state_dict()["stem.0.weight"])  # not the student
    assert all(m.p == 0 for m in strat.teacher.modules() if isinstance(m, nn.Dropout))
    # train.init starts the student from a checkpoint too
    tr2 = _ps_trainer(tmp_path / "c", init=str(ckpt))
    assert all(torch.equal(tr2.model.state_dict()[k], v) for k, v in src.state_dict().items())


def test_kd_without_a_teacher_is_refused(tmp_path, capsys):
    from _ps_helpers import write_ps_exp
    from nasplat.cli import main

    p = write_ps_exp(tmp_path, phases={"teacher": {"epochs": 0}, "kernel": {"epochs": 1}})
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.options" in err and "teacher" in err and str(p) in err
    assert not (tmp_path / "runs").exists()
    missing = write_ps_exp(tmp_path, name="m", options={"teacher": "nope.safetensors"})
    assert main(["train", str(missing)]) == 2
    assert "teacher checkpoint not found" in capsys.readouterr().err


def test_ofa_parameter_groups_and_min_subnet_option(tmp_path):
    from nasplat.train.strategies import StepInfo

    tr = _ps_trainer(tmp_path)
    strat = tr.strategy
    decay, no_decay = strat.parameter_groups()
    names = {id(p): n for n, p in tr.model.named_parameters()}
    assert any("transforms" in names[id(p)] for p in decay["params"])  # OFA decays the matrices
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0
    phases = strat.phases()
    info = StepInfo(5, 0, 1, 0)
    strat.begin_phase(5, phases[5])
    assert len(strat.step_archs(info, 10)) == 4  # OFA: 4 random subnets, no forced smallest
    opt = _ps_trainer(tmp_path, options={"expand_min_subnet": True}).strategy
    opt.begin_phase(4, phases[4])
    archs = opt.step_archs(StepInfo(4, 0, 1, 0), 10)
    assert len(archs) == 5 and archs[-1] == opt.smallest(10)
    assert all(archs[-1][f"e{i}_{j}"] == 3 for i in (0, 1) for j in range(int(archs[-1][f"d{i}"])))  # expand/1
    opt.begin_phase(5, phases[5])
    assert opt.step_archs(info, 10)[-1] == opt.ctx.space.arch({**opt.ctx.space.min_arch(), "r": 10})
    opt.begin_phase(1, phases[1])
    assert len(opt.step_archs(StepInfo(1, 0, 1, 0), 10)) == 1  # only in the expand phases


def test_weights_option_reaches_every_stage(tmp_path):
    """``--weights CKPT`` for profile, search and export: each stage's loader returns the
    checkpoint's weights, not the run's (which does not exist here)."""
    from _ps_helpers import write_ps_exp
    from nasplat.checkpoint import save_weights
    from nasplat.cli import build_parser
    from nasplat.experiment import load_experiment
    from nasplat.export.stage import load_trained_supernet
    from nasplat.hw.stage import load_profiling_supernet
    from nasplat.search.stage import load_supernet_weights

    exp = load_experiment(write_ps_exp(tmp_path))
    torch.manual_seed(4)
    net = build_supernet(exp.space)
    ckpt = tmp_path / "w.safetensors"
    save_weights(ckpt, net, {"space_hash": exp.space.hash()})
    want = net.state_dict()
    for got in (load_trained_supernet(exp, ckpt).state_dict(), load_profiling_supernet(exp, ckpt).state_dict(),
                {k: torch.from_numpy(np.array(v)) for k, v in load_supernet_weights(exp, ckpt).items()}):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    parser = build_parser()
    for argv in (["profile", "E", "--weights", "W"], ["search", "E", "--weights", "W"],
                 ["export", "E", "--weights", "W", "--no-recalibrate"]):
        assert parser.parse_args(argv).weights == "W"
