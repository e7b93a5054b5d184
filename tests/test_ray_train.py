"""Data-parallel progressive shrinking under Ray Train: 2 workers on the local Ray
instance (gloo), identical replicas afterwards, rank 0 alone writing."""
from __future__ import annotations

import csv
import json

from _ps_helpers import write_ps_exp
from nasplat.experiment import load_experiment
from nasplat.supernet import build_supernet
from nasplat.checkpoint import load_weights
from nasplat.checkpoint import weights_digest
from nasplat.train.ray_train import REPLICAS_FILE
from nasplat.train.run import train_experiment


def test_two_workers_hold_identical_weights(ray_session, tmp_path):
    # teacher (1 subnet) then expand/2 (4 subnets + KD): a few data-parallel steps each
    phases = {"teacher": {"epochs": 1}, "kernel": {"epochs": 0}, "depth/1": {"epochs": 0},
              "depth/2": {"epochs": 0}, "expand/1": {"epochs": 0}, "expand/2": {"epochs": 1}}
    exp = load_experiment(write_ps_exp(tmp_path, "dp", phases=phases, workers=2))
    start = build_supernet(exp.space)
    final = train_experiment(exp)
    d = exp.run_dir / "supernet"
    replicas = json.loads((d / REPLICAS_FILE).read_text())
    assert replicas["world_size"] == 2
    a, b = replicas["digests"]
    assert a == b  # both workers ended with the same weights
    # ... which are the weights rank 0 saved, and training changed them
    net = build_supernet(exp.space)
    load_weights(final, net, exp.space.hash())
    assert weights_digest(net) == a
    assert weights_digest(start) != a
    # each worker took half the data: 1437 train images / (128 x 2) -> 5 steps per epoch
    rows = list(csv.DictReader(open(d / "train_log.csv")))
    assert [r["phase"] for r in rows] == ["teacher"] * 5 + ["expand/2"] * 5
    assert [int(r["global_step"]) for r in rows] == list(range(10))
    assert {len(r["macs"].split(";")) for r in rows[5:]} == {4}
    # only rank 0 wrote: one log row per step, no per-worker files
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["last.safetensors", "last.json", "supernet.safetensors", "supernet.json", "train_log.csv",
         REPLICAS_FILE, "phase_0_teacher.safetensors", "phase_0_teacher.json",
         "phase_1_expand-2.safetensors", "phase_1_expand-2.json", "provenance.json"])
