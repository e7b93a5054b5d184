"""Tiny space / data / context builders shared by the uniform and PA&DA tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nasplat.data import DataConfig, load_data
from nasplat.space import space_from_dict
from nasplat.train.config import TrainConfig
from nasplat.train.distributed import Dist
from nasplat.train.strategies import TrainContext

@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on 2 shared cores, 2 threads per test process mostly wait."""
    torch.set_num_threads(1)
    yield


TINY_SPACE = {
    "family": "mbv3", "name": "tiny", "input_channels": 1, "num_classes": 10, "resolutions": [8, 10],
    "stem": {"width": 8, "stride": 1}, "first_block": {"width": 8},
    "stages": [
        {"width": 8, "stride": 1, "depths": [1, 2], "kernels": [3, 5], "expands": [2, 4]},
        {"width": 16, "stride": 2, "depths": [1, 2], "kernels": [3, 5], "expands": [2, 4], "se": True},
    ],
    "head": {"final_expand": 16, "feature_mix": 16, "dropout": 0.0},
}

TINY_DATA = {"name": "digits", "resolution": 10, "batch_size": 64, "val_fraction": 0.5, "calib_images": 100}


def tiny_space(**changes):
    return space_from_dict({**TINY_SPACE, **changes}, "tiny")


def tiny_data(**changes):
    return load_data(DataConfig(**{**TINY_DATA, **changes}), 1)


def tiny_ctx(run_dir: Path, strategy: str = "pada", epochs: int = 3, options: dict | None = None,
             data=None, seed: int = 0, lr: float = 0.1, label_smoothing: float = 0.1,
             space_changes: dict | None = None, space=None, **train) -> TrainContext:
    """A training context on the tiny space; seeds torch's global generator with ``seed``
    (the supernet's initial weights come from it), so a test does not depend on what ran
    before it in the same process."""
    torch.manual_seed(seed)
    cfg = TrainConfig(strategy=strategy, epochs=epochs, lr=lr, label_smoothing=label_smoothing,
                      options=options or {}, threads=1, **train)
    return TrainContext(space or tiny_space(**(space_changes or {})), data if data is not None else tiny_data(),
                        cfg, seed, Path(run_dir), torch.device("cpu"), Dist())


def tiny_experiment_yaml(tmp: Path, strategy: str, epochs: int = 2, options: dict | None = None,
                         **train) -> Path:
    import yaml

    exp = {"name": f"tiny_{strategy}", "seed": 0, "output_dir": str(tmp / "runs"), "space": TINY_SPACE,
           "data": TINY_DATA, "train": {"strategy": strategy, "epochs": epochs, "lr": 0.1,
                                        "options": options or {}, "threads": 1, **train}}
    path = tmp / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path
