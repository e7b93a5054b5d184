"""A search on a 2-node local Ray cluster (two raylets on this machine), run in a
subprocess so it does not clash with the session's Ray instance."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from _search_helpers import write_experiment

SCRIPT = r'''
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
import ray
try:
    from nasplat.experiment import load_experiment
    from nasplat.search.stage import run_search
    exp = load_experiment(sys.argv[1])
    result = run_search(exp, address=cluster.address, quiet=True, print_table=False)
    alive = sorted(n.node_id for n in cluster.list_all_nodes())
    print("RESULT " + json.dumps({"nodes": [r["node"] for r in result.records],
                                  "ids": [r["arch_id"] for r in result.records], "alive": alive}))
finally:
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()
'''


def test_two_node_cluster_runs_evaluators_on_both_nodes(tmp_path, repo):
    p = write_experiment(tmp_path, {"searcher": "random", "objectives": ["accuracy", "params"], "budget": 10,
                                    "population": 10, "workers": 2})
    script = tmp_path / "cluster_search.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, str(script), str(p)], capture_output=True, text=True, timeout=400,
                         env=env, cwd=tmp_path)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT "):])
    assert len(res["ids"]) == len(set(res["ids"])) == 10
    assert len(set(res["nodes"])) == 2  # evaluators ran on both raylets
    assert set(res["nodes"]) <= set(res["alive"])
    assert (tmp_path / "runs" / "s" / "search" / "pareto.csv").exists()
