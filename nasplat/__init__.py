"""nasplat: weight-sharing supernets, hardware-aware search and ONNX export, end to end.

The public API (see :mod:`nasplat.api` and the README)::

    import nasplat
    exp = nasplat.load_experiment("examples/digits_ofa.yaml")   # or a run folder
    nasplat.train_supernet(exp); nasplat.run_search(exp)
    nasplat.read_pareto(exp)                                    # a pandas DataFrame

Names load on first use, so ``import nasplat`` is cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_API = ["load_experiment", "load_space", "load_data", "raw_val_images", "load_supernet", "extract_subnet",
        "evaluate", "train_supernet", "run_search", "export_subnets", "export_onnx", "read_trials", "read_pareto",
        "read_measurements", "read_train_log"]
_EXPORTS = {**{name: ".api" for name in _API}, "Arch": ".space", "SearchSpace": ".space", "Supernet": ".supernet",
            "Experiment": ".experiment", "UserError": ".errors"}
_names, __getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["__version__", *_names]

if TYPE_CHECKING:
    from .api import (evaluate, export_onnx, export_subnets, extract_subnet, load_data, load_experiment, load_space,
                      load_supernet, raw_val_images, read_measurements, read_pareto, read_train_log, read_trials,
                      run_search, train_supernet)
    from .errors import UserError
    from .experiment import Experiment
    from .space import Arch, SearchSpace
    from .supernet import Supernet
