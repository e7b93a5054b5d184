"""Tiny experiments for the search tests (a small mbv3 space on digits, an untrained
supernet saved as the 'trained' checkpoint so no test trains)."""
from __future__ import annotations

from pathlib import Path

import yaml

TINY_SPACE = {
    "family": "mbv3", "name": "tiny", "input_channels": 1, "num_classes": 10,
    "resolutions": [8, 10],
    "stem": {"width": 8, "stride": 1, "act": "relu"},
    "first_block": {"width": 8, "act": "relu"},
    "stages": [
        {"width": 8, "stride": 1, "depths": [1, 2], "kernels": [3, 5], "expands": [3, 4], "se": False},
        {"width": 16, "stride": 2, "depths": [1, 2], "kernels": [3, 5], "expands": [3, 4], "se": True},
    ],
    "head": {"final_expand": 32, "feature_mix": 32, "dropout": 0.0},
}


def write_experiment(tmp: Path, search: dict, name: str = "s", train: dict | None = None,
                     save_supernet: bool = True) -> Path:
    tmp = Path(tmp)
    (tmp / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    exp = {"name": name, "seed": 0, "output_dir": str(tmp / "runs"), "space": "space.yaml",
           "data": {"name": "digits", "resolution": 10, "calib_images": 64, "batch_size": 64},
           "train": train or {"strategy": "sandwich", "epochs": 1, "lr": 0.05},
           "search": search}
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    if save_supernet:
        from nasplat.experiment import load_experiment
        from nasplat.supernet import build_supernet
        from nasplat.checkpoint import save_weights

        e = load_experiment(path)
        import torch

        torch.manual_seed(0)
        save_weights(e.run_dir / "supernet" / "supernet.safetensors", build_supernet(e.space),
                     {"space_hash": e.space.hash(), "space": e.space.config.name})
    return path
