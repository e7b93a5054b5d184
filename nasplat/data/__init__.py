"""Data sets: digits (embedded default), cifar10 (binary / restricted-pickle folder), folder (ImageFolder)."""
from ._base import (DATASETS, DataBundle, DataConfig, TensorData, fixed_split, load_data, load_experiment_data,
                    to_channels)
from . import digits  # noqa: F401  (registers)
from . import cifar10  # noqa: F401  (registers)
from . import folder  # noqa: F401  (registers)

__all__ = ["DATASETS", "DataBundle", "DataConfig", "TensorData", "fixed_split", "load_data", "load_experiment_data",
           "to_channels"]
