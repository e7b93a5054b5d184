"""A real two-node Ray cluster, started as separate processes the way a user starts one
(``ray start --head --node-ip-address 127.0.0.1`` and ``ray start --address``, each with
its own temp dir and ports), and nasplat's commands run on it with ``--address``.

The second node runs in its own mount namespace (where ``unshare`` is allowed) in which
the repository, the installed package's source folder and one data folder are hidden
behind empty mounts: it is a node without the repository, which must get the package
through the job's runtime_env, and a node that cannot read a path the driver can.

All cluster checks share one cluster (module fixture). ``ray stop`` would stop every Ray
on the machine (the test session's own instance too), so each node is started in a
session of its own, and teardown ends exactly the processes of those two sessions, even
on failure.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from _tiny_space import TINY_SPACE

RAY = str(Path(sys.executable).with_name("ray"))
REPO = Path(__file__).resolve().parent.parent
NAMESPACE_SETUP = "mount -t tmpfs nasplat-test {}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    """Every port a node opens, free ones (two nodes and other Rays share this machine)."""
    out = []
    for opt in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"):
        out += [opt, str(_free_port())]
    return out


def _env() -> dict[str, str]:
    """This process's environment without what an earlier local Ray start left in it
    (loopback-only mode would keep the head from taking a second node)."""
    from nasplat.ray_runtime import LOOPBACK_ONLY_ENV

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", LOOPBACK_ONLY_ENV)}
    return {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _can_unshare() -> bool:
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


def _installed_package() -> Path:
    """The folder ``import nasplat`` finds outside the repository (the install's source)."""
    out = subprocess.run([sys.executable, "-c", "import nasplat, os; print(os.path.dirname(nasplat.__file__))"],
                         env=_env(), cwd="/", capture_output=True, text=True, check=True).stdout
    return Path(out.strip()).resolve()


def _hidden_folders(paths: list[Path], keep: Path) -> list[Path]:
    """The outermost of ``paths``, each split into its sub-folders where it holds ``keep``
    (the virtual environment lives in the repository on CI: the node needs its Python)."""
    out: list[Path] = []
    for p in sorted(set(paths), key=lambda p: len(p.parts)):
        if any(q == p or q in p.parents for q in out):
            continue
        if p == keep or p in keep.parents:
            out += _hidden_folders([c for c in p.iterdir() if c.is_dir() and not c.is_symlink() and c != keep], keep)
        else:
            out.append(p)
    return out


class Cluster:
    def __init__(self, tmp: Path, repo: Path):
        self.tmp, self.repo = tmp, repo
        self.sessions: list[int] = []
        self.hidden = tmp / "hidden"  # behind an empty mount on the second node
        (self.hidden / "data").mkdir(parents=True)
        self.isolated = _can_unshare()

    def start(self) -> None:
        port = _free_port()
        head = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                "--include-dashboard=false", "--dashboard-port", str(_free_port()),
                "--temp-dir", tempfile.mkdtemp(prefix="rh", dir="/tmp"), *_node_ports()]
        out = self._run(head)
        # Ray publishes a loopback --node-ip-address as the machine's own address; the
        # printed join command names the GCS address every process must use
        line = next(ln for ln in out.splitlines() if "ray start --address=" in ln)
        self.address = line.split("--address=")[1].strip().strip("'\"")
        worker = [RAY, "start", "--address", self.address, "--num-cpus", "2",
                  "--temp-dir", tempfile.mkdtemp(prefix="rw", dir="/tmp"), *_node_ports()]
        if self.isolated:
            hide = _hidden_folders([self.repo, _installed_package(), self.hidden], Path(sys.prefix).resolve())
            script = " && ".join([NAMESPACE_SETUP.format(p) for p in hide] + ["exec " + " ".join(worker)])
            worker = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        self._run(worker)

    def _run(self, cmd: list[str]) -> str:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                cwd="/tmp", start_new_session=True)
        self.sessions.append(proc.pid)  # a new session: the node's daemons and workers stay in it
        out = proc.communicate(timeout=240)[0]
        assert proc.returncode == 0, out[-3000:]
        return out

    def processes(self, name: str = "") -> list[int]:
        """PIDs of this cluster's processes (the nodes' sessions: Ray's worker processes
        have process groups of their own) whose command line contains ``name``."""
        ps = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
        rows = [ln.split(None, 2) for ln in ps.splitlines() if ln.strip()]
        return [int(r[0]) for r in rows if len(r) == 3 and int(r[1]) in self.sessions and name in r[2]]

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2 if sig == signal.SIGTERM else 0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"), REPO)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def nasplat(cluster: Cluster, repo: Path, *args: str, timeout: int = 400, **popen) -> subprocess.Popen:
    env = {**_env(), "PYTHONPATH": str(repo)}
    return subprocess.Popen([sys.executable, "-m", "nasplat.cli", *args, "--address", cluster.address], env=env,
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def console_is_clean(out: str, failures: bool = False) -> None:
    """No Ray error, warning or traceback line; no traceback unless a failure was provoked."""
    banned = ["core_worker.cc", "constructor arguments in the object store", "Failed to query Ray Train",
              "Token authentication", "\x1b[", "repeated"] + ([] if failures else ["Traceback", "WARNING", "ERROR"])
    for bad in banned:
        assert bad not in out, f"{bad!r} in the console:\n{out[-4000:]}"


PROBE = r"""
import json, os, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from nasplat.errors import UserError
from nasplat.ray_runtime import check_paths_on_nodes, start_ray

start_ray(sys.argv[1])

@ray.remote(num_cpus=0)
def where():
    import nasplat
    return {"node": ray.get_runtime_context().get_node_id(), "package": nasplat.__file__}

nodes = [n for n in ray.nodes() if n["Alive"]]
out = {"nodes": ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                         .remote() for n in nodes]),
       "head": next(n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"])}
check_paths_on_nodes({"data.path": sys.argv[2]})  # readable everywhere
try:
    check_paths_on_nodes({"data.path": sys.argv[3]}, "exp.yaml")
except UserError as e:
    out["error"] = e.line()
print("PROBE " + json.dumps(out))
"""


def test_nodes_get_the_package_and_say_which_cannot_read_the_data(cluster, repo, tmp_path):
    (tmp_path / "shared").mkdir()
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = subprocess.run([sys.executable, str(script), cluster.address, str(tmp_path / "shared"),
                           str(cluster.hidden / "data")], env={**_env(), "PYTHONPATH": str(repo)}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(lines[-1][len("PROBE "):])
    assert len(res["nodes"]) == 2
    for n in res["nodes"]:  # the code on every node came through the runtime_env, not the repository
        assert "runtime_resources" in n["package"] and "py_modules" in n["package"], n
        assert not n["package"].startswith(str(repo))
    if not cluster.isolated:
        pytest.skip("no mount namespace here: the second node sees every path the driver sees")
    other = next(n["node"] for n in res["nodes"] if n["node"] != res["head"])
    err = res.get("error", "")
    assert err.startswith(f"exp.yaml: data.path: Ray node ") and f"(id {other[:12]})" in err, err
    assert f"cannot read {cluster.hidden / 'data'}" in err


def write_exp(tmp: Path) -> Path:
    p = tmp / "cl.yaml"
    p.write_text(f"name: cl\nseed: 3\noutput_dir: {tmp / 'runs'}\ndevice: cpu\nspace:\n{TINY_SPACE}"
                 "data: {name: digits, resolution: 12, calib_images: 100}\n"
                 "train: {strategy: uniform, epochs: 2, batch_size: 32, workers: 2, threads: 1, checkpoint_every: 5}\n"
                 "search: {searcher: random, objectives: [accuracy, macs], budget: 16, population: 8, workers: 2, "
                 "calib_batch: 100, val_images: 120}\n")
    return p


def test_train_and_search_on_two_nodes(cluster, repo, tmp_path):
    """``nasplat train`` (2 Ray Train workers, one per node) with one worker SIGKILLed
    mid-epoch, then ``nasplat search`` on the trained supernet."""
    exp = write_exp(tmp_path)
    storage = tmp_path / "runs" / "cl" / "ray" / "cl"
    proc = nasplat(cluster, repo, "train", str(exp))
    try:  # kill a worker mid-epoch, once Ray Train has registered a checkpoint (its snapshot file)
        deadline, killed, before = time.monotonic() + 300, None, -1
        while time.monotonic() < deadline and proc.poll() is None and killed is None:
            time.sleep(0.2)
            try:
                snap = json.loads((storage / "checkpoint_manager_snapshot.json").read_text())
                before = snap["latest_checkpoint_result"]["metrics"]["global_step"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            workers = cluster.processes("RayTrainWorker")
            if before % 22 and len(workers) == 2:  # 22 steps per epoch: not at an epoch's end
                killed = workers[-1]
                os.kill(killed, signal.SIGKILL)
        out = proc.communicate(timeout=400)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None and proc.returncode == 0, out[-4000:]
    console_is_clean(out, failures=True)
    sup = tmp_path / "runs" / "cl" / "supernet"
    replicas = json.loads((sup / "replicas.json").read_text())
    assert len(set(replicas["digests"])) == 1  # identical replicas after the restart
    assert len(set(replicas["nodes"])) == 2  # one worker on each node
    resumed = [ln for ln in out.splitlines() if "resuming from the last checkpoint" in ln]
    assert len(resumed) == 1, out[-4000:]  # one restart, its line printed once
    at = int(resumed[0].rsplit("global step ", 1)[1].rstrip(")"))
    assert before <= at < before + 5 + 1  # at most one checkpoint interval (5 steps) lost
    steps = [int(r.split(",")[3]) for r in (sup / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(2 * (1437 // 64)))  # every step once in the driver's log
    assert (sup / "supernet.safetensors").exists()

    proc = nasplat(cluster, repo, "search", str(exp))
    out = proc.communicate(timeout=400)[0]
    assert proc.returncode == 0, out[-4000:]
    console_is_clean(out)
    assert "search: 2 evaluator(s) on 2 Ray node(s), cpu" in out
    import pandas as pd

    trials = pd.read_csv(tmp_path / "runs" / "cl" / "search" / "trials.csv")
    assert len(trials) == 16 and trials["accuracy"].between(0.05, 1).all() and trials["accuracy"].nunique() > 1
    assert trials["node"].nunique() == 2  # evaluators on both nodes
    assert (tmp_path / "runs" / "cl" / "search" / "pareto.csv").exists()
