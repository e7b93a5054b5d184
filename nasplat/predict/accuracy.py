"""Accuracy predictor from (arch, supernet accuracy) pairs: a regressor on the one-hot
choices (+ analytic costs), as DyNAS-T/LINAS and OFA's accuracy predictor do (OFA uses
a 3-layer MLP on one-hot features; a ridge + boosted-trees regressor is used here
because it fits in well under a second on a few hundred pairs and needs no tuning).
Persisted like the latency predictor: training CSV + hyper-parameters, refit on load."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..space import Arch, SearchSpace
from .learned import LearnedPredictor


class AccuracyPredictor(LearnedPredictor):
    kind = "accuracy"

    def __init__(self, space: SearchSpace, model: str = "ridge+gbrt", log_target: bool = False,
                 costs: bool = True, random_state: int = 0, **model_options: Any):
        options = {"n_estimators": 200, "max_depth": 2, "alpha": 1.0, **model_options} if model == "ridge+gbrt" \
            else model_options
        super().__init__(space, model, log_target, costs, random_state, **options)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.clip(super().predict(archs), 0.0, 1.0)
