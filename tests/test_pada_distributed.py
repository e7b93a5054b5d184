"""PA&DA data-parallel under the Ray Train launcher: 2 gloo workers, each on its own
shard, must draw the same subnets and the same next-epoch indices (their g and G
statistics are all-reduced)."""
from __future__ import annotations

import json

from nasplat.experiment import load_experiment
from nasplat.train.ray_train import REPLICAS_FILE
from nasplat.train.run import train_experiment

from _pada_helpers import tiny_experiment_yaml


def test_two_workers_draw_identical_subnets_and_indices(ray_session, tmp_path):
    exp = load_experiment(tiny_experiment_yaml(tmp_path, "pada", epochs=3, options={"trace": True},
                                               workers=2, batch_size=32))
    train_experiment(exp)
    d = exp.run_dir / "supernet"
    traces = [[json.loads(ln) for ln in (d / "pada_trace" / f"rank{r}.jsonl").read_text().splitlines()]
              for r in (0, 1)]
    r0, r1 = traces
    assert [t["epoch"] for t in r0] == [t["epoch"] for t in r1] == [0, 1, 2]
    for a, b in zip(r0, r1):
        assert a["rank"] == 0 and b["rank"] == 1
        assert a["archs"] == b["archs"] and len(a["archs"]) == 898 // (32 * 2)  # same subnet every step
        assert len(set(a["archs"])) > 3
        for k in ("order", "q", "p", "g", "G"):  # same epoch order (before sharding), same statistics
            assert a[k] == b[k], k
    # each worker forwarded only half of the data, yet after the all-reduce both hold g for all of it
    assert r0[0]["seen_frac"] > 0.99  # a worker alone forwards at most half (448 of 898; drop_last)
    # the distributions moved away from uniform by epoch 2 (epoch 1 draws from q and p at
    # tau = 0, as the official code), so agreement is not trivial
    assert r0[2]["q"] != r0[0]["q"] and r0[2]["p"] != r0[0]["p"]
    replicas = json.loads((d / REPLICAS_FILE).read_text())
    assert replicas["digests"][0] == replicas["digests"][1]
