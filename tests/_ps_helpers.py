"""Small experiments for the progressive-shrinking, resume and Ray Train tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# 3 choices per kind so every phase restriction differs; SE on a stage whose
# middle widths (32/48/64) give distinct SE widths (8/16/16).
PS_SPACE: dict[str, Any] = {
    "family": "mbv3", "name": "ps_tiny", "input_channels": 1, "num_classes": 10,
    "resolutions": [8, 10],
    "stem": {"width": 8, "stride": 1, "act": "h_swish"},
    "first_block": {"width": 8, "act": "relu"},
    "stages": [
        {"width": 8, "stride": 1, "depths": [1, 2, 3], "kernels": [3, 5, 7], "expands": [2, 3, 4],
         "se": False, "act": "relu"},
        {"width": 16, "stride": 2, "depths": [1, 2, 3], "kernels": [3, 5, 7], "expands": [2, 3, 4],
         "se": True, "act": "h_swish"},
    ],
    "head": {"final_expand": 32, "feature_mix": 32, "dropout": 0.1},
}


def write_ps_exp(tmp: Path, name: str = "ps", phases: dict | None = None, batch_size: int = 128,
                 options: dict | None = None, **train: Any) -> Path:
    """An experiment on digits at 10 px with a tiny PS schedule (1 epoch per phase)."""
    phases = phases if phases is not None else {n: {"epochs": 1} for n in
                                                 ("teacher", "kernel", "depth/1", "depth/2", "expand/1", "expand/2")}
    cfg = {
        "name": name, "seed": 5, "output_dir": str(tmp / "runs"), "space": PS_SPACE,
        "data": {"name": "digits", "resolution": 10, "batch_size": batch_size, "calib_images": 200},
        "train": {"strategy": "progressive_shrinking", "epochs": 6, "lr": 0.1, "threads": 1,
                  "options": {"phases": phases, **(options or {})}, **train},
    }
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p
