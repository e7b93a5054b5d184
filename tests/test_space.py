"""The search-space language (family mbv3): subnet count, analytic MACs/params against
a measured count, Arch JSON / id / encoding, mutation and crossover."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from nasplat.errors import UserError
from nasplat.space import Arch, load_space
from nasplat.supernet import build_supernet

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
MBV3_SPACES = sorted(p.stem for p in SPACES.glob("*.yaml") if yaml.safe_load(p.read_text()).get("family") == "mbv3")
N_ARCHS = 50


@pytest.fixture
def one_thread():
    """Batch-1 forwards of small nets: one thread is faster and does not spin on a
    shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def space(name: str):
    return load_space(SPACES / f"{name}.yaml")


def test_shipped_mbv3_spaces_present():
    assert {"ofa_mbv3", "ofa_mbv3_small", "ofa_mbv3_digits"} <= set(MBV3_SPACES)


def test_ofa_count_per_resolution():
    sp = space("ofa_mbv3")
    per_stage = sum((3 * 3) ** d for d in (2, 3, 4))  # k x e choices per block, d blocks
    per_res = per_stage**5
    assert sp.count() == per_res * 25 and sp.resolutions() == list(range(128, 225, 4))
    assert math.isclose(per_res, 2.18e19, rel_tol=0.01)  # OFA's "about 2 x 10^19"
    d = sp.describe()
    assert d["archs_per_resolution"] == per_res
    assert d["macs_min"] < d["macs_max"] and d["params_min"] < d["params_max"]
    # loose sanity ranges: OFA's largest MBv3 w1.0 subnet has ~7.7M params; the smallest
    # (d2 e3 k3) keeps the 2.5M-param head; MACs span ~40M (128 px) .. ~0.6G (224 px)
    assert 3e6 < d["params_min"] < 4.5e6 and 7e6 < d["params_max"] < 8.5e6
    assert 30e6 < d["macs_min"] < 120e6 and 450e6 < d["macs_max"] < 700e6


@pytest.mark.parametrize("name", MBV3_SPACES)
def test_analytic_macs_and_params_match_measured(name, one_thread):
    sp = space(name)
    net = build_supernet(sp).eval()
    rng = np.random.default_rng(1)
    archs = [sp.min_arch(), sp.max_arch()] + [sp.sample(rng) for _ in range(N_ARCHS)]
    for arch in archs:
        static = net.extract(arch).eval()
        r = sp.resolution(arch)
        x = torch.zeros(1, sp.config.input_channels, r, r)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = static(x)
        assert out.shape == (1, sp.config.num_classes)
        measured_macs = counter.get_total_flops() / 2
        assert abs(sp.macs(arch) - measured_macs) <= 0.01 * measured_macs, (arch.to_json(), sp.macs(arch),
                                                                           measured_macs)
        measured_params = sum(p.numel() for p in static.parameters())
        assert abs(sp.num_params(arch) - measured_params) <= 0.01 * measured_params
        costs = sp.stage_costs(arch)
        assert sum(m for m, _ in costs) == sp.macs(arch) and sum(p for _, p in costs) == sp.num_params(arch)
    # the costs actually vary with the arch (a constant model would also "agree" on one arch)
    assert len({sp.macs(a) for a in archs}) > N_ARCHS // 2


@pytest.mark.parametrize("name", MBV3_SPACES)
def test_arch_json_id_and_encoding(name):
    sp = space(name)
    rng = np.random.default_rng(2)
    for _ in range(N_ARCHS):
        a = sp.sample(rng)
        text = a.to_json()
        b = Arch.from_json(text)
        assert b == a and b.id == a.id and sp.arch(json.loads(text)) == a
        expected_id = hashlib.sha1(json.dumps(dict(a), sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
        assert a.id == expected_id and len(a.id) == 12
        assert Arch(dict(reversed(list(a.items())))).id == a.id  # key order does not matter
        v = sp.encode(a)
        assert v.shape == (len(sp.params),) and sp.decode(v) == a
        assert sp.decode(list(v)).id == a.id
        oh = sp.one_hot(a)
        assert oh.shape == (sum(len(p.choices) for p in sp.params),)
        assert oh.sum() == len(sp.active(a))
    # a stable id: the same arch has the same id across processes and versions
    assert space(name).max_arch().id == sp.max_arch().id
    # choices that the depth switches off do not change the id (canonical form)
    a = sp.min_arch()
    unused = f"k0_{int(a['d0'])}"  # a kernel beyond stage 0's depth
    other = [k for k in sp.param(unused).choices if k != a[unused]][0]
    with pytest.raises(UserError):  # an arch must set every active choice...
        sp.arch({"r": a["r"]})
    assert sp.arch({**a, unused: other}) == a  # ...and inactive ones are canonicalised


def test_stable_id_golden():
    """The id scheme is part of the file formats (runs, predictors): pin one value."""
    a = Arch({"b": 2, "a": 1.5, "c": "x"})
    assert a.to_json() == '{"a":1.5,"b":2,"c":"x"}'
    assert a.id == hashlib.sha1(b'{"a":1.5,"b":2,"c":"x"}').hexdigest()[:12]


def test_arch_errors_name_the_choice():
    sp = space("ofa_mbv3_small")
    good = dict(sp.max_arch())
    with pytest.raises(UserError) as e:
        sp.arch({**good, "k0_0": 4})
    assert e.value.field == "arch.k0_0"
    with pytest.raises(UserError) as e:
        sp.arch({**good, "width9": 3})
    assert "width9" in str(e.value)
    with pytest.raises(ValueError):
        sp.decode([0, 1])


@pytest.mark.parametrize("name", MBV3_SPACES)
def test_mutate_and_crossover_stay_in_space(name):
    sp = space(name)
    rng = np.random.default_rng(3)
    changed = 0
    for _ in range(100):
        a, b = sp.sample(rng), sp.sample(rng)
        for child in (sp.mutate(a, rng, 0.3), sp.crossover(a, b, rng)):
            assert sp.arch(dict(child)) == child  # valid and canonical
            for p in sp.params:
                assert child[p.name] in p.choices
        m = sp.mutate(a, rng, 0.3)
        changed += m != a
        assert sp.mutate(a, rng, 0.0) == a
        c = sp.crossover(a, b, rng)
        for n in sp.active(c):  # every active choice of a child comes from a parent...
            assert c[n] in (a[n], b[n])
    assert changed > 80  # ...and mutation does change archs
    assert sp.crossover(a, a, rng) == a


def test_sampling_covers_every_choice():
    sp = space("ofa_mbv3_small")
    rng = np.random.default_rng(4)
    archs = [sp.sample(rng) for _ in range(300)]
    for p in sp.params:
        seen = {a[p.name] for a in archs if p.name in sp.active(a)}
        assert seen == set(p.choices), p.name
    assert sp.min_arch() != sp.max_arch()
    assert sp.macs(sp.min_arch()) <= min(sp.macs(a) for a in archs)
    assert sp.macs(sp.max_arch()) >= max(sp.macs(a) for a in archs)


def test_space_hash_is_stable_and_content_based(tmp_path):
    a, b = space("ofa_mbv3_small"), space("ofa_mbv3_small")
    assert a.hash() == b.hash() and a.hash() != space("ofa_mbv3").hash()
    data = yaml.safe_load((SPACES / "ofa_mbv3_small.yaml").read_text())
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(data))  # comments / layout do not matter
    assert load_space(tmp_path / "same.yaml").hash() == a.hash()
    data["stages"][0]["kernels"] = [3, 5]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(data))
    assert load_space(tmp_path / "other.yaml").hash() != a.hash()


def test_space_cli_info_and_sample(capsys):
    from nasplat.cli import main

    assert main(["space", "info", str(SPACES / "ofa_mbv3.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "mbv3" and info["archs_per_resolution"] == 7371**5
    assert main(["space", "info", str(SPACES / "ofa_mbv3.yaml")]) == 0
    out = capsys.readouterr().out
    assert "2.176e+19 per resolution" in out and "MACs" in out
    assert main(["space", "sample", "ofa_mbv3_small", "-n", "5", "--seed", "7"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    sp = space("ofa_mbv3_small")
    archs = [sp.arch(json.loads(line)) for line in lines]
    assert len(archs) == 5 and len({a.id for a in archs}) == 5
    rng = np.random.default_rng(7)
    assert archs == [sp.sample(rng) for _ in range(5)]
