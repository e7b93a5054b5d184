"""PC-DARTS search and stand-alone retraining through the real training engine, on
digits at 8x8, and a 2-worker data-parallel search step on a local Ray instance."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nasplat.errors import UserError
from nasplat.experiment import load_experiment
from nasplat.export import to_onnx, verify
from nasplat.supernet.standalone import load_standalone
from nasplat.train.run import build_trainer, train_experiment

SPACE = {"family": "darts_cell", "name": "tiny", "input_channels": 1, "num_classes": 10, "resolution": 8,
         "cells": 3, "channels": 8, "reductions": [1], "stem": {"multiplier": 2}}


def write_exp(tmp_path: Path, name: str, train: dict, space: dict | None = None) -> Path:
    exp = {"name": name, "seed": 0, "output_dir": str(tmp_path / "runs"), "space": space or SPACE,
           "data": {"name": "digits", "resolution": 8, "batch_size": 64}, "train": train}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def test_pcdarts_search_then_standalone_retrain_and_export(tmp_path):
    path = write_exp(tmp_path, "search", {"strategy": "pcdarts", "epochs": 2, "batch_size": 128,
                                          "options": {"K": 2, "arch_warmup_epochs": 1, "arch_lr": 0.01}})
    exp = load_experiment(path)
    trainer = build_trainer(exp)
    strat = trainer.strategy
    # the split: disjoint halves; the epoch order only uses the weight half
    assert not set(strat.weight_idx) & set(strat.arch_idx)
    assert len(strat.weight_idx) + len(strat.arch_idx) == len(trainer.ctx.data.train)
    assert set(strat.epoch_order(0, 0, len(trainer.ctx.data.train))) <= set(strat.weight_idx)
    alpha0 = {k: v.detach().clone() for k, v in strat.model.alphas.items()}
    beta0 = {k: v.detach().clone() for k, v in strat.model.betas.items()}
    trainer.fit()
    net = strat.model
    for k in alpha0:  # α and β moved after the warm-up epoch
        assert not torch.equal(alpha0[k], net.alphas[k].detach())
        assert not torch.equal(beta0[k], net.betas[k].detach())
    sdir = exp.run_dir / "supernet"
    geno = json.loads((sdir / "genotype.json").read_text())
    assert geno["epoch"] == 2 and set(geno) >= {"normal", "reduce"}
    assert geno["normal"] == net.genotype()["normal"]
    assert all(len(node) == 2 for node in geno["normal"])
    hist = json.loads((sdir / "genotype_history.json").read_text())
    assert set(hist) == {"1", "2"}
    log = (sdir / "train_log.csv").read_text().splitlines()
    assert len(log) > 10
    state = trainer.strategy.state_dict()
    assert state["arch_pos"] > 0 and state["arch_opt"]["state"]

    # retrain the derived network stand-alone, then rebuild it for export
    rpath = write_exp(tmp_path, "retrain", {"strategy": "standalone", "epochs": 1, "lr": 0.05, "batch_size": 32,
                                            "options": {"genotype": str(sdir / "genotype.json"),
                                                        "auxiliary": True, "auxiliary_pool": "adaptive",
                                                        "drop_path": 0.1}})
    rexp = load_experiment(rpath)
    train_experiment(rexp)
    info = json.loads((rexp.run_dir / "supernet" / "derived.json").read_text())
    assert info["genotype"]["normal"] == geno["normal"] and info["auxiliary"] is True
    acc = json.loads((rexp.run_dir / "supernet" / "standalone.json").read_text())["val_acc"]
    assert acc > 0.3  # one epoch on 8x8 digits; well above chance (0.1)
    model = load_standalone(rexp.space, rexp.run_dir)
    x = torch.randn(2, 1, 8, 8)
    res = to_onnx(model, (2, 1, 8, 8))
    assert verify(model, res.data, x, rtol=1e-3, atol=1e-5) < 1e-3


def test_standalone_retraining_defaults_are_the_official_train_py(tmp_path):
    geno = {"normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]]] * 4, "reduce": [[["max_pool_3x3", 0]]] * 4}
    opts = {"genotype": geno, "auxiliary_pool": "adaptive"}
    trainer = build_trainer(load_experiment(write_exp(tmp_path, "d", {"strategy": "standalone", "epochs": 10,
                                                                     "options": opts})))
    strat = trainer.strategy
    c = strat.ctx.cfg
    assert (c.lr, c.momentum, c.nesterov, c.weight_decay, c.label_smoothing, c.grad_clip, c.warmup_epochs) == \
        (0.025, 0.9, False, 3e-4, 0.0, 5.0, 0.0)
    assert strat.model.aux_head is not None and strat.drop_path == 0.3  # auxiliary head and drop-path on
    opt = strat.make_optimizer(strat.phases()[0])
    assert [g["weight_decay"] for g in opt.param_groups] == [3e-4]  # on all weights, BN and biases too
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(strat.model.parameters()))
    assert not opt.param_groups[0]["nesterov"]
    strat.begin_epoch(0, 5)
    assert strat.model.drop_path_prob == pytest.approx(0.15)  # 0.3 ramped linearly over the epochs
    steps = 14  # the cosine is per epoch: constant within one
    assert strat.lr_factor(0, 10 * steps, 0) == strat.lr_factor(steps - 1, 10 * steps, 0) == 1.0
    assert strat.lr_factor(5 * steps, 10 * steps, 0) == pytest.approx(0.5)
    # what the experiment sets wins
    t2 = build_trainer(load_experiment(write_exp(tmp_path, "d2", {"strategy": "standalone", "lr": 0.1,
                                                                 "nesterov": True, "options": opts})))
    assert (t2.strategy.ctx.cfg.lr, t2.strategy.ctx.cfg.nesterov, t2.strategy.ctx.cfg.weight_decay) == (0.1, True, 3e-4)


def test_options_are_validated(tmp_path):
    with pytest.raises(UserError, match="train.options.K"):
        load_experiment(write_exp(tmp_path, "bad", {"strategy": "pcdarts", "options": {"K": 0}}))
    with pytest.raises(UserError, match="exactly one"):
        load_experiment(write_exp(tmp_path, "bad2", {"strategy": "standalone", "options": {}}))
    exp = load_experiment(write_exp(tmp_path, "bad3", {"strategy": "pcdarts", "options": {"K": 3}}))
    with pytest.raises(UserError, match="not divisible by K=3"):
        build_trainer(exp)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(exp_path: str, rank: int, port: int):
    import torch
    import torch.distributed as dist

    from nasplat.experiment import load_experiment
    from nasplat.train.run import build_trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        trainer = build_trainer(load_experiment(exp_path))
        assert trainer.ctx.dist.world_size == 2
        strat = trainer.strategy
        seen = []
        orig = strat.arch_batch

        def spy(bs):
            x, y = orig(bs)
            seen.append(float(x.sum()))
            return x, y

        strat.arch_batch = spy
        alpha0 = torch.cat([p.detach().reshape(-1).clone() for p in strat.model.arch_parameters()])
        trainer.fit()
        arch = torch.cat([p.detach().reshape(-1) for p in strat.model.arch_parameters()])
        weights = torch.cat([p.detach().reshape(-1) for p in strat.model.weight_parameters()])
        return {"alpha0": alpha0.numpy(), "arch": arch.numpy(), "weights": weights.numpy(), "seen": seen}
    finally:
        dist.destroy_process_group()


def test_two_worker_search_step_keeps_replicas_identical(tmp_path, ray_session):
    ray = ray_session
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable in workers
    path = write_exp(tmp_path, "dp", {"strategy": "pcdarts", "epochs": 1, "batch_size": 64,
                                      "options": {"K": 2, "arch_warmup_epochs": 0, "arch_lr": 0.01,
                                                  "eval_every": 0}})
    port = _free_port()
    task = ray.remote(num_cpus=1)(_worker)
    r0, r1 = ray.get([task.remote(str(path), 0, port), task.remote(str(path), 1, port)])
    assert np.array_equal(r0["alpha0"], r1["alpha0"])
    assert not np.array_equal(r0["arch"], r0["alpha0"])  # the architecture did step
    assert np.array_equal(r0["arch"], r1["arch"])  # α, β identical on both workers
    assert np.array_equal(r0["weights"], r1["weights"])  # and the weights
    assert r0["seen"] != r1["seen"]  # each worker used its own shard of the architecture half
