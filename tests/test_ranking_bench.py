"""The ranking benchmark's fixed protocol pieces: arch choice, equal budgets, the ground
truth's self-agreement, paired bootstrap intervals and the decision rule's inputs.
(``nasplat bench ranking --quick`` runs the whole bench; the full run is the lead's.)"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import ranking  # noqa: E402


def test_archs_spread_over_macs_and_cells_cut_off_from_the_input_are_left_out():
    space = ranking._space(yaml.safe_load(ranking.SPACES["nb201"].read_text()))
    archs = ranking.pick_archs(space, 30)
    assert len({a.id for a in archs}) == 30
    macs = [space.macs(a) for a in archs]
    assert macs == sorted(macs) and macs[-1] > 3 * macs[0]
    assert all(ranking.connected(space, a) for a in archs)
    dead = space.arch({p.name: "none" if p.name.startswith("n2") else "nor_conv_3x3" for p in space.params})
    assert not ranking.connected(space, dead)  # node 3's every input edge is `none`
    cut = space.arch({**dict(dead), "n2_2": "skip_connect", "n1_0": "none", "n1_1": "none", "n0_0": "none"})
    assert not ranking.connected(space, cut)  # node 3 hangs on node 2, which nothing reaches


def test_equal_budget_in_subnet_steps():
    from nasplat.data import DataConfig, load_data

    space = ranking._space(yaml.safe_load(ranking.SPACES["mbv3"].read_text()))
    data = load_data(DataConfig(name="digits", resolution=12, batch_size=64, calib_images=100), 1)
    train = {"lr": 0.1, "threads": 1}
    e_u, s_u = ranking.epochs_for_budget("uniform", {}, train, space, data, 1500, 64)
    e_s, s_s = ranking.epochs_for_budget("sandwich", {"num_random": 2}, train, space, data, 1500, 64)
    steps = len(data.train) // 64
    assert s_u == e_u * steps and s_s == 4 * e_s * steps  # one subnet per step vs four
    assert abs(s_u - 1500) <= steps // 2 + 1 and abs(s_s - 1500) <= 2 * steps
    assert e_u > 3.5 * e_s


def test_seed_agreement_bootstrap_and_terciles():
    rng = np.random.default_rng(0)
    truth = np.linspace(0.05, 0.5, 30)
    seeds = truth + rng.normal(0, 0.01, (3, 30))
    agree, pairs = ranking.seed_agreement(seeds)
    assert len(pairs) == 3 and agree > 0.8
    noisy = truth + rng.normal(0, 0.2, (3, 30))
    assert ranking.seed_agreement(noisy)[0] < agree
    gt = seeds.mean(0)
    good = gt + rng.normal(0, 0.005, (4, 30))  # ranks like the ground truth
    bad = gt + rng.normal(0, 0.3, (4, 30))
    ci, delta = ranking.bootstrap({"uniform": bad, "good": good, "same": bad.copy()}, gt, "uniform", 100)
    assert ci["good"][0] > 0.8 and ci["uniform"][1] < ci["good"][0]
    point, lo, hi = delta["good"]
    assert lo > 0.3 and lo <= point <= hi  # clearly better: the rule says good >= uniform
    assert delta["same"] == (0.0, 0.0, 0.0)  # paired resamples: identical runs differ by exactly 0
    parts = ranking.terciles(np.array([5, 1, 9, 3, 7, 2, 8, 4, 6.0]))
    assert [sorted(np.array([5, 1, 9, 3, 7, 2, 8, 4, 6.0])[p]) for p in parts] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert ranking.tau([1, 2, 3], [1, 1, 1]) != ranking.tau([1, 2, 3], [1, 1, 1])  # no ranking: nan, not 0
    assert ranking.mean_tau(good, gt) == pytest.approx(np.mean([ranking.tau(r, gt) for r in good]))
