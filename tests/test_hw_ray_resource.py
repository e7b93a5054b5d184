"""A profile with ``where: ray`` + ``ray_resource`` measures on the Ray node that has
that custom resource. The session Ray fixture has no custom resources, so this test
starts its own two-node ``ray.cluster_utils.Cluster`` in a subprocess (independent of
the session instance): a head node without the resource and a second node with it."""
from __future__ import annotations

import json
import subprocess
import sys

from _hw_helpers import REPO

SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + '/tests')
import ray
from ray.cluster_utils import Cluster
from nasplat.hw import HardwareProfile, measure_models
from nasplat.hw.profile import Protocol
from _hw_helpers import tiny_onnx

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
dev = cluster.add_node(num_cpus=1, resources={"device:testdev": 1})
ray.init(address=cluster.address, log_to_driver=False, configure_logging=False,
         runtime_env={"env_vars": {"PYTHONPATH": sys.argv[1]}})
cluster.wait_for_nodes()
prof = HardwareProfile(name="testdev", where="ray", ray_resource="device:testdev")
models = [{"arch_id": "a%d" % i, "data": tiny_onnx(4, seed=i), "input_shape": [1, 3, 8, 8]} for i in range(2)]
rows = measure_models(models, prof, Protocol(warmup_runs=2, warmup_seconds=0.0, timed_runs=5))
head = cluster.head_node.node_id
print(json.dumps({"nodes": [r["node"] for r in rows], "dev": dev.node_id, "head": head,
                  "lat": [r["latency_ms"] for r in rows]}))
ray.shutdown()
cluster.shutdown()
"""


def test_ray_resource_profile_runs_on_the_node_with_the_resource():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dev"] != out["head"]
    assert out["nodes"] == [out["dev"], out["dev"]]
    assert all(v > 0 for v in out["lat"])
