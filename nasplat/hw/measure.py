"""The measurement harness: arch -> static subnet -> ONNX (-> INT8) -> timed on the
profile's device (this process, a Ray node with the profile's custom resource, or an
offline bundle).

Public API (used by the search and export stages)::

    from nasplat.hw import load_profile, measure_archs
    rows = measure_archs(space, archs, load_profile("local-cpu"))   # one dict per arch
    latency_ms = [r["latency_ms"] for r in rows]

Weights do not change latency, so without a trained supernet a randomly initialised
one is used (``supernet=None``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from ..space import Arch, SearchSpace
from . import runner
from .profile import HardwareProfile, Protocol

ARCH_COLUMNS = ["profile", "arch_id", "arch", "macs", "params", "resolution", "precision", "batch_size"]
MEASUREMENT_COLUMNS = ARCH_COLUMNS + runner.TIMING_COLUMNS + runner.RUN_COLUMNS


def arch_columns(space: SearchSpace, arch: Arch, profile: HardwareProfile) -> dict[str, Any]:
    return {"profile": profile.name, "arch_id": arch.id, "arch": arch.to_json(), "macs": space.macs(arch),
            "params": space.num_params(arch), "resolution": space.resolution(arch),
            "precision": profile.precision, "batch_size": profile.batch_size}


def input_shape(space: SearchSpace, arch: Arch, profile: HardwareProfile) -> list[int]:
    r = space.resolution(arch)
    return [profile.batch_size, space.config.input_channels, r, r]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize (the same op training uses) of a float32 (N, C, H, W) array."""
    import torch

    from ..supernet import resize

    return resize(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), size).numpy()


def export_model(module, shape: Sequence[int], profile: HardwareProfile, calib: np.ndarray | None = None) -> bytes:
    """A static module -> ONNX bytes in the profile's precision. For int8, ``calib`` are
    real images (any size; resized to the input); without them Gaussian noise is used,
    which leaves latency unchanged but not accuracy."""
    from ..onnxio import to_onnx

    data = to_onnx(module.eval(), tuple(shape), opset=profile.opset).data
    if profile.precision == "int8":
        from .quantize import quantize_int8

        if calib is None:
            calib = np.random.default_rng(0).standard_normal((16, *shape[1:])).astype(np.float32)
        elif calib.shape[-1] != shape[-1]:
            calib = resize_images(calib, int(shape[-1]))
        data = quantize_int8(data, calib[: profile.quantization.calib_images], profile.quantization)
    return data


def export_arch(supernet, space: SearchSpace, arch: Arch, profile: HardwareProfile,
                calib: np.ndarray | None = None) -> dict[str, Any]:
    """One model entry for the runner: the arch's columns, ONNX bytes and input shape."""
    shape = input_shape(space, arch, profile)
    data = export_model(supernet.extract(arch), shape, profile, calib)
    return {**arch_columns(space, arch, profile), "data": data, "input_shape": shape}


def _ray_measure(models: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    import ray

    return runner.measure_models(models, settings, node=ray.get_runtime_context().get_node_id())


def ensure_ray(address: str | None = None) -> None:
    from ..ray_runtime import start_ray

    start_ray(address)


def measure_models(models: list[dict[str, Any]], profile: HardwareProfile, protocol: Protocol | None = None,
                   address: str | None = None, progress: Callable[[dict[str, Any]], None] | None = None
                   ) -> list[dict[str, Any]]:
    """Time runner model entries on the profile's device; rows in the input order.

    ``where: ray`` runs one Ray task per call on a node with ``ray_resource`` (1 unit,
    0 CPUs: a device measures one batch of models at a time); Ray must be initialised
    or ``address`` given."""
    settings = profile.settings(protocol)
    if profile.where == "local":
        return runner.measure_models(models, settings, progress)
    if profile.where == "ray":
        import ray

        ensure_ray(address)
        task = ray.remote(num_cpus=0, resources={profile.ray_resource: 1}, max_retries=1)(_ray_measure)
        rows = ray.get(task.remote(models, settings))
        if progress is not None:
            for r in rows:
                progress(r)
        return rows
    raise UserError(f"profile {profile.name!r} is an offline device (where: bundle): write a bundle with "
                    f"`nasplat profile EXP --device {profile.name} --bundle OUT.tar`, run `nasplat device-run` "
                    "on the device and read the CSV back with --import", None, "where")


def measure_archs(space: SearchSpace, archs: Sequence[Arch], profile: HardwareProfile, supernet=None,
                  calib: np.ndarray | None = None, protocol: Protocol | None = None, address: str | None = None,
                  chunk: int = 8, progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Export and time ``archs`` on ``profile``; one row (dict, see
    ``MEASUREMENT_COLUMNS``) per arch, in the order given. ``latency_ms`` is the profile's
    statistic. Models are exported ``chunk`` at a time to bound memory."""
    if supernet is None:
        from ..supernet import build_supernet

        supernet = build_supernet(space)
    supernet.eval()
    rows: list[dict[str, Any]] = []
    for s in range(0, len(archs), chunk):
        models = [export_arch(supernet, space, a, profile, calib) for a in archs[s:s + chunk]]
        rows += measure_models(models, profile, protocol, address, progress)
    return rows
