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

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "HardwareProfile": ".profile", "Protocol": ".profile", "Quantization": ".profile",
    "ProfileStageConfig": ".profile", "load_profile": ".profile", "shipped_profiles": ".profile",
    "measure_archs": ".measure", "measure_models": ".measure", "export_model": ".measure",
    "MEASUREMENT_COLUMNS": ".measure",
    "quantize_int8": ".quantize",
    "profile_experiment": ".stage", "write_bundle": ".stage", "import_results": ".stage",
    "read_measurements": ".stage", "measurements_path": ".stage", "stratified_archs": ".stage",
    "experiment_profile": ".stage",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .measure import MEASUREMENT_COLUMNS, export_model, measure_archs, measure_models
    from .profile import HardwareProfile, ProfileStageConfig, Protocol, Quantization, load_profile, shipped_profiles
    from .quantize import quantize_int8
    from .stage import (experiment_profile, import_results, measurements_path, profile_experiment,
                        read_measurements, stratified_archs, write_bundle)
