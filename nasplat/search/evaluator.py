"""Supernet evaluation of archs on a pool of Ray actors.

Each :class:`SupernetEvaluator` actor builds the supernet once, with the weights taken
from the Ray object store (``ray.put`` once in the driver, so N actors on a node share
one copy), prepares its calibration and validation batches once, and then evaluates
archs (extract -> BN recalibration -> validation) as the driver feeds them. The driver
keeps two archs in flight per actor, so a slow subnet never idles the other workers.

Failures: actors are created with ``max_restarts``; when an actor dies, Ray restarts it
(its constructor runs again from the same object-store weights) and the driver
re-submits the archs it had in flight, so no arch is lost. An actor that keeps dying
beyond its restarts is replaced by a fresh one; an arch that fails on more than
``max_restarts + 2`` attempts aborts the search (it is the arch, not the machine).
"""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..space import Arch


class SupernetEvaluator:
    """The actor body (also usable in-process, e.g. by benchmarks)."""

    def __init__(self, space: dict[str, Any], weights: dict[str, np.ndarray] | None, data: dict[str, Any],
                 base_dir: str | None, calib_images: int | None, calib_batch: int = 250,
                 val_images: int | None = None, threads: int = 1, seed: int = 0, channels_last: bool = False,
                 validation: str = "torch"):
        import torch

        from ..data import DataConfig, load_data
        from ..space import space_from_dict
        from ..supernet import build_supernet
        from ..supernet.evaluate import SubnetEvaluator

        torch.set_num_threads(max(1, int(threads)))
        self.space = space_from_dict(space)
        net = build_supernet(self.space)
        if weights is not None:
            state = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
            net.load_state_dict(state)
        bundle = load_data(DataConfig(**data), self.space.config.input_channels,
                           Path(base_dir) if base_dir else None)
        self.evaluator = SubnetEvaluator(net, bundle, calib_images=calib_images, calib_batch=calib_batch, seed=seed,
                                         val_images=val_images, channels_last=channels_last,
                                         validation=validation, threads=max(1, int(threads)))  # type: ignore[arg-type]
        self.node = _node_id()
        self.pid = os.getpid()

    def evaluate(self, arch_json: str) -> dict[str, Any]:
        """extract -> BN recalibration -> validation of one arch (:class:`SubnetEvaluator`)."""
        arch = self.space.arch(Arch.from_json(arch_json))
        ev = self.evaluator.evaluate(arch)
        return {"arch_id": arch.id, "accuracy": ev.accuracy, "seconds": ev.seconds, "extract_s": ev.extract_s,
                "recal_s": ev.recal_s, "val_s": ev.val_s, "node": self.node, "pid": self.pid}

    def where(self) -> dict[str, Any]:
        return {"node": self.node, "pid": self.pid}


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray
        pass
    return "local"


def weights_to_numpy(net: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


class EvaluatorPool:
    """``workers`` evaluator actors fed by the driver; see the module docstring."""

    def __init__(self, workers: int, init: dict[str, Any], max_restarts: int = 3, cpus: float = 1.0,
                 in_flight: int = 2):
        import ray

        self.ray = ray
        self.init = dict(init)
        if self.init.get("weights") is not None and not isinstance(self.init["weights"], ray.ObjectRef):
            self.init["weights"] = ray.put(self.init["weights"])  # once; every actor reads it
        self.max_restarts = max_restarts
        self.in_flight = max(1, in_flight)
        self._cls = ray.remote(num_cpus=cpus, max_restarts=max_restarts, max_task_retries=0)(SupernetEvaluator)
        self.actors = [self._new_actor() for _ in range(workers)]
        self.failures = [0] * workers
        self.restarts_seen = 0

    def _new_actor(self) -> Any:
        return self._cls.options(scheduling_strategy="SPREAD").remote(**self.init)

    def locations(self) -> list[dict[str, Any]]:
        return self.ray.get([a.where.remote() for a in self.actors])

    def map(self, archs: Sequence[Arch], on_result: Callable[[int, dict[str, Any]], None] | None = None
            ) -> list[dict[str, Any]]:
        """Evaluate ``archs``; ``on_result(i, result)`` is called as each one finishes."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        ray = self.ray
        queue = deque(range(len(archs)))
        results: list[dict[str, Any] | None] = [None] * len(archs)
        attempts = [0] * len(archs)
        inflight: dict[Any, tuple[int, int]] = {}
        load = [0] * len(self.actors)

        def fill(a: int) -> None:
            while queue and load[a] < self.in_flight:
                i = queue.popleft()
                attempts[i] += 1
                inflight[self.actors[a].evaluate.remote(archs[i].to_json())] = (a, i)
                load[a] += 1

        for a in range(len(self.actors)):
            fill(a)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                a, i = inflight.pop(ref)
                load[a] -= 1
                try:
                    res = ray.get(ref)
                except (RayActorError, ActorDiedError, ActorUnavailableError):
                    self.restarts_seen += 1
                    if attempts[i] > self.max_restarts + 2:
                        raise RuntimeError(f"arch {archs[i].id} failed on {attempts[i]} attempts") from None
                    queue.appendleft(i)  # re-evaluated, never lost
                    self.failures[a] += 1
                    if self.failures[a] > self.max_restarts:  # out of restarts: a fresh actor
                        self.actors[a] = self._new_actor()
                        self.failures[a] = 0
                    fill(a)
                    continue
                results[i] = res
                if on_result is not None:
                    on_result(i, res)
                fill(a)
            for b in range(len(self.actors)):  # keep everyone busy after re-queues
                fill(b)
        return [r for r in results if r is not None]

    def shutdown(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []
