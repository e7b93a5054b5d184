"""Supernet evaluation of archs on an asynchronous pool of Ray actors.

Each :class:`SupernetEvaluator` actor builds the supernet once, on its device (a GPU
share when ``search.gpus_per_worker`` > 0, several evaluators may share one GPU),
prepares its calibration and validation batches once, and then evaluates archs
(extract -> BN recalibration -> validation). The weights go to the Ray object store
once (``ray.put`` in the driver; actors on a node share that copy) and reach each
actor through a method call, :meth:`SupernetEvaluator.set_weights`, not through its
constructor: an actor-creation task with an object-store argument makes Ray log the
core_worker "constructor arguments in the object store" error of ray#53727 (its
restart could fail once the argument is evicted). After a restart the actor asks for
its weights again (:class:`WeightsMissing`) and the pool sends them.

The pool, asynchronously (what the search runner uses)::

    pool = EvaluatorPool(workers, init, max_restarts=3, cpus=1, gpus=0, timeout_s=600)
    while more archs are wanted:
        while pool.free_slots:                 # an evaluator is (or will be) idle
            pool.submit(key, arch)             # key: the caller's handle, e.g. a trial number
        done = pool.next_result()              # the first evaluation to finish (any order)
        done.key, done.arch, done.result       # result: {"arch_id", "accuracy", "seconds", "node", ...}
        done.error                             # or the ORIGINAL exception of a failed evaluation
    pool.shutdown()

``free_slots`` counts evaluators without work (``in_flight`` archs each, 1 by
default: an arch waits in the driver, not behind a slow subnet on one actor, so no
evaluator idles while another works through a queue). ``map(archs, on_result)`` is
the same thing for a fixed list.

Failures, each costing only its own arch:

* the evaluation raises: ``done.error`` is the exception raised inside the actor (its
  class and message, e.g. ``torch.OutOfMemoryError``), the actor lives on;
* it runs longer than ``timeout_s``: the actor is killed and restarted,
  ``done.error`` is an :class:`EvaluationTimeout`;
* the actor dies (a node lost, a killed process): Ray restarts it (``max_restarts``;
  its constructor runs again) and the arch is re-submitted; an actor out of restarts
  is replaced by a fresh one; an arch whose actor died ``max_restarts + 2`` times is
  returned as failed (:class:`EvaluatorLost`).
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ..space import Arch


class EvaluationTimeout(TimeoutError):
    """An evaluation ran past ``search.eval_timeout``."""


class EvaluatorLost(RuntimeError):
    """An arch's evaluator died on every attempt."""


class WeightsMissing(RuntimeError):
    """The evaluator was built to receive its weights by :meth:`SupernetEvaluator.set_weights`
    and has not (yet, or again after a restart)."""


AWAIT_WEIGHTS = "set_weights"  # the ``weights`` argument of an actor whose pool sends them


class SupernetEvaluator:
    """The actor body (also usable in-process, e.g. by benchmarks): builds the supernet
    on its device and evaluates archs with :class:`nasplat.supernet.evaluate.SubnetEvaluator`.

    ``weights``: numpy arrays by state-dict key, None (the untrained supernet), or
    :data:`AWAIT_WEIGHTS` (the pool sends them with :meth:`set_weights`)."""

    def __init__(self, space: dict[str, Any], weights: dict[str, np.ndarray] | str | None, data: dict[str, Any],
                 base_dir: str | None, calib_images: int | None, calib_batch: int = 250,
                 val_images: int | None = None, threads: int = 1, seed: int = 0, channels_last: bool = False,
                 validation: str = "torch", device: str = "cpu", precision: str = "fp32"):
        # An exception here would kill the actor and Ray would restart it, again and again
        # (a node that cannot read the data): it is kept and raised by where() / set_weights(),
        # so the pool reports the original error once.
        self.init_error: Exception | None = None
        try:
            self._build(space, weights, data, base_dir, calib_images, calib_batch, val_images, threads, seed,
                        channels_last, validation, device, precision)
        except Exception as e:  # noqa: BLE001 - handed to the driver unchanged
            self.init_error = e

    def _build(self, space: dict[str, Any], weights: dict[str, np.ndarray] | str | None, data: dict[str, Any],
               base_dir: str | None, calib_images: int | None, calib_batch: int, val_images: int | None,
               threads: int, seed: int, channels_last: bool, validation: str, device: str, precision: str) -> None:
        import torch

        from ..data import DataConfig, load_data
        from ..device import resolve_device
        from ..space import space_from_dict
        from ..supernet import build_supernet
        from ..supernet.evaluate import SubnetEvaluator

        torch.set_num_threads(max(1, int(threads)))
        self.node, self.pid = _node_id(), os.getpid()
        self.device = resolve_device(device)
        self.space = space_from_dict(space)
        self.net = build_supernet(self.space).to(self.device)
        self.awaiting_weights = weights == AWAIT_WEIGHTS
        if isinstance(weights, dict):
            self.set_weights(weights)
        bundle = load_data(DataConfig(**data), self.space.config.input_channels,
                           Path(base_dir) if base_dir else None)
        self.evaluator = SubnetEvaluator(self.net, bundle, calib_images=calib_images, calib_batch=calib_batch,
                                         seed=seed, val_images=val_images, channels_last=channels_last,
                                         validation=validation, threads=max(1, int(threads)),  # type: ignore[arg-type]
                                         device=self.device, precision=precision)

    def set_weights(self, weights: dict[str, np.ndarray]) -> dict[str, Any]:
        """Load the supernet's weights (numpy arrays by state-dict key); returns :meth:`where`."""
        import torch

        if self.init_error is not None:
            raise self.init_error
        self.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        self.awaiting_weights = False
        return self.where()

    def evaluate(self, arch_json: str) -> dict[str, Any]:
        """extract -> BN recalibration -> validation of one arch (:class:`SubnetEvaluator`)."""
        if self.init_error is not None:
            raise self.init_error
        if self.awaiting_weights:
            raise WeightsMissing("this evaluator has no weights yet")
        arch = self.space.arch(Arch.from_json(arch_json))
        ev = self.evaluator.evaluate(arch)
        return {"arch_id": arch.id, "accuracy": ev.accuracy, "seconds": ev.seconds, "extract_s": ev.extract_s,
                "recal_s": ev.recal_s, "val_s": ev.val_s, "node": self.node, "pid": self.pid}

    def where(self) -> dict[str, Any]:
        if self.init_error is not None:
            raise self.init_error
        return {"node": self.node, "pid": self.pid, "device": str(self.device)}


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


@dataclass
class Completed:
    """One finished evaluation: ``result`` on success, else ``error`` (the original
    exception); ``key`` is what the caller passed to :meth:`EvaluatorPool.submit`."""

    key: Hashable
    arch: Arch
    result: dict[str, Any] | None = None
    error: BaseException | None = None

    @property
    def message(self) -> str:
        """The error as one line: ``ExceptionClass: message``."""
        if self.error is None:
            return ""
        text = " ".join(str(self.error).split()) or "(no message)"
        return f"{type(self.error).__name__}: {text}"


@dataclass
class _Task:
    key: Hashable
    arch: Arch
    attempts: int = 0


class EvaluatorPool:
    """``workers`` evaluator actors behind :meth:`submit` / :meth:`next_result`; see
    the module docstring."""

    def __init__(self, workers: int, init: dict[str, Any], max_restarts: int = 3, cpus: float = 1.0,
                 gpus: float = 0.0, timeout_s: float | None = None, in_flight: int = 1,
                 evaluator: type = SupernetEvaluator):
        import ray

        self.ray = ray
        self.init = dict(init)
        w = self.init.get("weights")
        self.weights_ref = None if w is None else (w if isinstance(w, ray.ObjectRef) else ray.put(w))
        if self.weights_ref is not None:
            self.init["weights"] = AWAIT_WEIGHTS
        if gpus > 0:
            self.init["device"] = "cuda"  # the actor's share of its GPU, as Ray's CUDA_VISIBLE_DEVICES names it
        self.max_restarts = max_restarts
        self.in_flight = max(1, in_flight)
        self.timeout_s = timeout_s
        self._cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=max_restarts,
                               max_task_retries=0)(evaluator)
        self.actors = [self._new_actor() for _ in range(workers)]
        self.failures = [0] * workers
        self.restarts_seen = 0
        self._queue: deque[_Task] = deque()
        self._running: dict[Any, tuple[int, _Task, float]] = {}  # ref -> (actor, task, start time)
        self._load = [0] * workers
        self._ready: list[bool] = [False] * workers
        self._probes: dict[Any, int] = {}  # ref of an actor's where() call -> actor: it is built
        for a in range(workers):
            self._probe(a)
        self._done: deque[Completed] = deque()

    # -- actors -------------------------------------------------------------------------
    def _new_actor(self) -> Any:
        return self._cls.options(scheduling_strategy="SPREAD").remote(**self.init)

    def _probe(self, a: int) -> None:
        """Send actor ``a`` its weights (or just wait until it is built); it takes work
        once that call returns."""
        self._ready[a] = False
        actor = self.actors[a]
        ref = actor.where.remote() if self.weights_ref is None else actor.set_weights.remote(self.weights_ref)
        self._probes[ref] = a

    def locations(self) -> list[dict[str, Any]]:
        """Where each actor runs (waits until all are built)."""
        return self.ray.get([a.where.remote() for a in self.actors])

    # -- the asynchronous interface --------------------------------------------------------
    @property
    def pending(self) -> int:
        """Archs submitted and not yet returned by :meth:`next_result`."""
        return len(self._queue) + len(self._running) + len(self._done)

    @property
    def free_slots(self) -> int:
        """How many more archs can be submitted without waiting behind another."""
        return max(0, len(self.actors) * self.in_flight - len(self._queue) - len(self._running))

    def submit(self, key: Hashable, arch: Arch) -> None:
        """Queue ``arch``; it starts as soon as an evaluator is free."""
        self._queue.append(_Task(key, arch))
        self._dispatch()

    def _dispatch(self) -> None:
        for a in range(len(self.actors)):
            while self._queue and self._ready[a] and self._load[a] < self.in_flight:
                task = self._queue.popleft()
                task.attempts += 1
                ref = self.actors[a].evaluate.remote(task.arch.to_json())
                self._running[ref] = (a, task, time.monotonic())
                self._load[a] += 1

    def next_result(self, timeout: float | None = None) -> Completed | None:
        """The next finished evaluation (success or failure), blocking up to ``timeout``
        seconds (None: until one finishes); None if nothing is pending or on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            if not (self._queue or self._running):
                return None
            wait = [*self._running, *self._probes]
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            nearest = self._nearest_timeout()
            if nearest is not None:
                left = nearest if left is None else min(left, nearest)
            ready, _ = self.ray.wait(wait, num_returns=1, timeout=left)
            for ref in ready:
                self._collect(ref)
            self._expire()
            self._dispatch()
            if not ready and deadline is not None and time.monotonic() >= deadline and not self._done:
                return None
        return self._done.popleft()

    def _nearest_timeout(self) -> float | None:
        if self.timeout_s is None or not self._running:
            return None
        first = min(start for _, _, start in self._running.values())
        return max(0.0, first + self.timeout_s - time.monotonic())

    def _collect(self, ref: Any) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        if ref in self._probes:
            a = self._probes.pop(ref)
            try:
                self.ray.get(ref)
                self._ready[a] = True
            except (RayActorError, ActorDiedError, ActorUnavailableError):
                self._actor_died(a)
            except RayTaskError as e:  # building the evaluator failed: it cannot start at all
                raise (e.cause if e.cause is not None else e) from None
            return
        a, task, _ = self._running.pop(ref)
        self._load[a] -= 1
        try:
            self._done.append(Completed(task.key, task.arch, result=self.ray.get(ref)))
        except RayTaskError as e:  # the evaluation raised: keep the original exception
            if isinstance(e.cause, WeightsMissing):  # restarted while idle: weights again, then the arch
                self._queue.appendleft(task)
                task.attempts -= 1
                if self._ready[a]:
                    self._probe(a)
                return
            self._done.append(Completed(task.key, task.arch, error=e.cause if e.cause is not None else e))
        except (RayActorError, ActorDiedError, ActorUnavailableError):
            if task.attempts > self.max_restarts + 1:
                self._done.append(Completed(task.key, task.arch, error=EvaluatorLost(
                    f"arch {task.arch.id}: its evaluator died on {task.attempts} attempts")))
            else:
                self._queue.appendleft(task)  # re-evaluated, never lost
            self._actor_died(a)

    def _actor_died(self, a: int) -> None:
        """Ray restarts the actor (its constructor runs again); out of restarts, a fresh one."""
        self.restarts_seen += 1
        self.failures[a] += 1
        for ref, (b, task, _) in list(self._running.items()):  # its queued calls are lost with it
            if b == a:
                del self._running[ref]
                self._load[a] -= 1
                self._queue.appendleft(task)
        if self.failures[a] > self.max_restarts:
            self.actors[a] = self._new_actor()
            self.failures[a] = 0
        self._probes = {r: b for r, b in self._probes.items() if b != a}
        self._probe(a)

    def _expire(self) -> None:
        if self.timeout_s is None:
            return
        now = time.monotonic()
        for ref, (a, task, start) in list(self._running.items()):
            if now - start < self.timeout_s or ref not in self._running:
                continue
            del self._running[ref]
            self._load[a] -= 1
            self._done.append(Completed(task.key, task.arch, error=EvaluationTimeout(
                f"arch {task.arch.id}: evaluation took longer than {self.timeout_s:g} s; its evaluator was "
                "restarted")))
            self.ray.kill(self.actors[a], no_restart=False)
            self._actor_died(a)

    # -- a fixed list ------------------------------------------------------------------------
    def map(self, archs: Sequence[Arch], on_result: Callable[[int, dict[str, Any]], None] | None = None,
            on_error: Callable[[int, Completed], None] | None = None) -> list[dict[str, Any]]:
        """Evaluate ``archs``; ``on_result(i, result)`` as each one finishes. A failed
        evaluation goes to ``on_error(i, completed)``, or is raised (the original
        exception) when there is no ``on_error``."""
        results: list[dict[str, Any] | None] = [None] * len(archs)
        for i, arch in enumerate(archs):
            self.submit(i, arch)
        while self.pending:
            done = self.next_result()
            assert done is not None
            i = int(done.key)  # type: ignore[call-overload]
            if done.error is not None:
                if on_error is None:
                    self.cancel()
                    raise done.error
                on_error(i, done)
                continue
            results[i] = done.result
            if on_result is not None:
                on_result(i, done.result)  # type: ignore[arg-type]
        return [r for r in results if r is not None]

    def cancel(self) -> None:
        """Forget every queued, running and unreturned arch (their results are dropped)."""
        self._queue.clear()
        self._done.clear()
        for ref, (a, _, _) in list(self._running.items()):
            self._load[a] -= 1
            del self._running[ref]

    def shutdown(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []
