"""Arch features for learned predictors (nn-Meter style): the one-hot of every choice
(inactive choices all zero) plus per-stage analytic MACs and params (in millions)
from the space's cost model — no model is built. Computed for a whole index matrix
at once (``space.one_hot_batch`` and ``space.stage_costs_batch``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..space import Arch, SearchSpace


def code_features(space: SearchSpace, codes: np.ndarray, costs: bool = True) -> np.ndarray:
    """Feature rows for index rows (``space.encode_batch``)."""
    codes = np.asarray(codes, dtype=np.int64)
    parts = [space.one_hot_batch(codes).astype(np.float64)]
    if costs:
        sc = space.stage_costs_batch(codes) / 1e6
        parts += [sc[:, :, 0], sc[:, :, 1], sc.sum(1)]
    return np.concatenate(parts, axis=1)


def arch_features(space: SearchSpace, archs: Sequence[Arch], costs: bool = True) -> np.ndarray:
    return code_features(space, space.encode_batch(list(archs)), costs)
