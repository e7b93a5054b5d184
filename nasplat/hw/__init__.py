"""Hardware profiles, ONNX Runtime latency measurement, INT8 quantisation, the device runner.

Public API (imported lazily, so ``python -m nasplat.hw.runner`` needs only onnxruntime
and numpy)::

    from nasplat.hw import load_profile, measure_archs, profile_experiment
    profile = load_profile("local-cpu")                      # or a path to a YAML
    rows = measure_archs(space, archs, profile)              # export + time, one dict per arch
    profile_experiment(exp, "local-cpu", samples=50)         # the `nasplat profile` stage
    read_measurements(measurements_path(exp.run_dir, "local-cpu"))
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HardwareProfile": "profile", "Protocol": "profile", "Quantization": "profile",
    "ProfileStageConfig": "profile", "load_profile": "profile", "shipped_profiles": "profile",
    "measure_archs": "measure", "measure_models": "measure", "export_model": "measure",
    "MEASUREMENT_COLUMNS": "measure",
    "quantize_int8": "quantize",
    "profile_experiment": "stage", "write_bundle": "stage", "import_results": "stage",
    "read_measurements": "stage", "measurements_path": "stage", "stratified_archs": "stage",
    "experiment_profile": "stage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
