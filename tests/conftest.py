"""Shared fixtures: one local Ray instance per test session (never local_mode)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that needs one, started the way nasplat
    starts one (nasplat.ray_runtime: 127.0.0.1, the package in the runtime_env)."""
    import ray

    from nasplat.ray_runtime import start_ray

    start_ray(num_cpus=4)
    yield ray
    # shut down at session end by pytest's atexit in ray; explicit for clarity
    ray.shutdown()


@pytest.fixture(autouse=True)
def _threads():
    """One torch thread per test process: tests run beside Ray workers and subprocesses,
    and oversubscribed OpenMP threads on 2 cores cost far more than they give."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def repo() -> Path:
    return REPO
