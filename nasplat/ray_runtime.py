"""The one place that starts or joins Ray; every stage that uses Ray goes through
:func:`ray_session` (or :func:`start_ray` / :func:`stop_ray`).

* ``address`` None: a local instance on this machine, bound to 127.0.0.1 (Ray's
  loopback-only mode: GCS, raylet and workers listen on the loopback interface only),
  the dashboard off; Ray's default token authentication stays on, without its banner.
* ``address`` given (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``): that cluster (a
  loopback address, e.g. a local instance another nasplat process started: joined in
  loopback mode too, or Ray would rewrite 127.0.0.1 to this machine's network address).

Either way the job's ``runtime_env`` carries the ``nasplat`` package itself
(``py_modules``; Ray zips it once, nodes fetch it from the head), so nodes without the
repository, or with another version of it, run this code; the third-party packages
must be installed on every node. Paths in an experiment are resolved on the driver;
:func:`check_paths_on_nodes` asks every alive node to read them and names a node
that cannot. Results come back to the driver's run folder (search trials and the
final supernet are written by the driver or travel through Ray); Ray Train's
checkpoints go to ``train.storage_path`` (see :mod:`nasplat.train.ray_train`).

Console: workers start with :func:`quiet_worker` (Ray Train V2's placement-group
cleaner queries the State API every few seconds, which needs the dashboard; without
one each query logs "Failed to query Ray Train Controller actor state"), and colour
codes in forwarded worker lines are off when stdout is not a terminal
(``RAY_COLOR_PREFIX=0``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray uses 127.0.0.1 as this node's address
# Ray Train V2 internals that only speak when something irrelevant here fails: the placement-
# group cleaner polls the State API (it lives in the dashboard, which nasplat's installs lack),
# the autoscaling client times out on a busy machine ("safe to ignore", it says). Errors still show.
NOISY_WORKER_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",
                        "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client")
# Ray Train V2's worker context logs each report ("Reporting training result N: ...") through a
# logger named after its file path, which escapes RunConfig's LoggingConfig; errors only there too.
NOISY_WORKER_LOGGER_FILES = ("ray.train.v2._internal.execution.context",)
NO_API_SERVER = "http://127.0.0.1:9"  # a closed local port: State API calls fail at once
_AUTH_BANNER = "Token authentication is enabled for this Ray cluster"


def package_dir() -> Path:
    """The ``nasplat`` package folder that travels to the nodes."""
    return Path(__file__).resolve().parent


def runtime_env() -> dict[str, Any]:
    """The job's runtime environment: the package and the quiet-worker hook."""
    return {"py_modules": [str(package_dir())], "excludes": ["__pycache__", "*.pyc"],
            "worker_process_setup_hook": "nasplat.ray_runtime.quiet_worker"}


def quiet_worker() -> None:
    """Run in every Ray worker process at start-up (``worker_process_setup_hook``).

    Besides limiting :data:`NOISY_WORKER_LOGGERS` to errors: the State API finds its
    server through the dashboard address in the GCS, or, when ``RAY_ADDRESS`` is unset,
    by looking for *any* Ray instance on the machine (two instances: an error). Point it
    at this worker's own cluster, or, where that cluster has no dashboard, at a closed
    port, so a query fails at once instead of retrying the GCS for 20 s and killing the
    cleaner's thread with a traceback. Never raises (a failing hook kills the worker)."""
    try:
        import importlib.util

        names = list(NOISY_WORKER_LOGGERS)
        for module in NOISY_WORKER_LOGGER_FILES:
            spec = importlib.util.find_spec(module)
            if spec is not None and spec.origin:
                names.append(spec.origin)
        for name in names:  # a filter: Ray Train's dictConfig resets child loggers' levels
            logging.getLogger(name).addFilter(_ErrorsOnly())
        import ray
        from ray._private import ray_constants
        from ray.experimental import internal_kv

        dashboard = internal_kv._internal_kv_get(ray_constants.DASHBOARD_ADDRESS,
                                                 namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
        if dashboard:
            os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
        else:
            os.environ.setdefault("RAY_API_SERVER_ADDRESS", NO_API_SERVER)
    except Exception:  # noqa: BLE001 - best effort only
        pass


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


class _DropAuthBanner(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _AUTH_BANNER not in record.getMessage()


def _quiet_driver() -> None:
    """Before Ray starts in this process: no colour codes in a console that is not a
    terminal (``RAY_COLOR_PREFIX=0`` for forwarded worker lines; Ray's log deduplication
    always colours its "[repeated Nx across cluster]" notes, so it is off there too: each
    worker line is then printed once, as the worker printed it), and no token banner."""
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        import ray._private.ray_logging as ray_logging  # read at import: this process may have imported Ray

        ray_logging.RAY_DEDUP_LOGS = os.environ["RAY_DEDUP_LOGS"] not in ("0", "false", "False")
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_DropAuthBanner())


def _loopback_only(on: bool) -> None:
    """Ray reads the switch when it is imported; set the variable (for the processes it
    starts) and the constant (for this one, if Ray is already imported)."""
    if on:
        os.environ[LOOPBACK_ONLY_ENV] = "0"
    else:
        os.environ.pop(LOOPBACK_ONLY_ENV, None)
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = not on and ray_constants.env_bool(LOOPBACK_ONLY_ENV,
                                                                         not ray_constants.IS_WINDOWS_OR_OSX)


def start_ray(address: str | None = None, *, num_cpus: float | None = None, log_to_driver: bool = False) -> bool:
    """Join ``address`` or start a local instance; True if this call started Ray (the
    caller then stops it with :func:`stop_ray`). A Ray already initialised in this
    process is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    _quiet_driver()
    common: dict[str, Any] = {"runtime_env": runtime_env(), "log_to_driver": log_to_driver,
                              "configure_logging": False}
    if address:
        from .ray_address import is_loopback

        _loopback_only(is_loopback(address))
        ray.init(address=address, **common)
    else:
        _loopback_only(True)
        cpus = max(os.cpu_count() or 1, int(num_cpus + 0.999)) if num_cpus else None
        ray.init(num_cpus=cpus, include_dashboard=False, **common)
    return True


def stop_ray(started: bool) -> None:
    if started:
        import ray

        ray.shutdown()


@contextlib.contextmanager
def ray_session(address: str | None = None, **kw: Any) -> Iterator[bool]:
    """``with ray_session(address):`` Ray joined or started for the block (stopped after
    it if this block started it)."""
    started = start_ray(address, **kw)
    try:
        yield started
    finally:
        stop_ray(started)


def _readable(paths: list[str]) -> list[str]:
    """The paths this node cannot read (runs on each node)."""
    bad = []
    for p in paths:
        q = Path(p)
        ok = os.access(q, os.R_OK) and (q.is_file() or (q.is_dir() and os.access(q, os.X_OK)))
        if ok and q.is_dir():
            try:
                next(iter(q.iterdir()), None)
            except OSError:
                ok = False
        if not ok:
            bad.append(p)
    return bad


def check_paths_on_nodes(paths: dict[str, str | Path], file: Any = None) -> None:
    """Every alive Ray node reads each path (``{field: path}``, resolved on the driver);
    the first one a node cannot read is a one-line UserError naming the node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not paths:
        return
    fields = {str(Path(p)): f for f, p in paths.items()}
    probe = ray.remote(num_cpus=0, max_retries=0)(_readable)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(list(fields)): n for n in nodes}
    for ref, node in refs.items():
        bad = ray.get(ref)
        if bad:
            where = node.get("NodeManagerAddress", "?")
            raise UserError(f"Ray node {where} (id {node['NodeID'][:12]}) cannot read {bad[0]}: every node "
                            "needs the data (shared storage, or the same path on each node)", file, fields[bad[0]])
