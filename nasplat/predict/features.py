"""Arch features for learned predictors (nn-Meter style): the one-hot of every choice
(inactive choices all zero) plus per-stage analytic MACs and params (in millions)
from ``space.stage_costs`` — no model is built."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..space import Arch, SearchSpace


def arch_features(space: SearchSpace, archs: Sequence[Arch], costs: bool = True) -> np.ndarray:
    rows = []
    for a in archs:
        f = [space.one_hot(a).astype(np.float64)]
        if costs:
            sc = np.asarray(space.stage_costs(a), dtype=np.float64) / 1e6
            f += [sc[:, 0], sc[:, 1], [sc[:, 0].sum(), sc[:, 1].sum()]]
        rows.append(np.concatenate(f))
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
