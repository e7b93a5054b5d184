"""Accuracy predictor from (arch, supernet accuracy) pairs: a regressor on the one-hot
choices (+ analytic costs), as DyNAS-T/LINAS and OFA's accuracy predictor do (OFA uses
a 3-layer MLP on one-hot features; a ridge + boosted-trees regressor is used here
because it fits in well under a second on a few hundred pairs and needs no tuning).
Persisted like the learned latency predictor: fitted arrays, loaded as they are."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..space import SearchSpace
from ._base import PREDICTORS
from .learned import LearnedPredictor

# the ridge + boosted residuals defaults for a few hundred accuracies (small, smooth)
RIDGE_GBRT_DEFAULTS = {"n_estimators": 200, "max_depth": 2, "alpha": 1.0}


@PREDICTORS.register("accuracy")
class AccuracyPredictor(LearnedPredictor):
    target = "accuracy"

    def __init__(self, space: SearchSpace, model: str = "ridge+gbrt", log_target: bool = False,
                 costs: bool = True, random_state: int = 0, **model_options: Any):
        super().__init__(space, model, log_target, costs, random_state, **model_options)

    def regressor_options(self) -> dict[str, Any]:
        defaults = RIDGE_GBRT_DEFAULTS if self.model == "ridge+gbrt" else {}
        return {**defaults, **self.model_options}

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        return np.clip(super().predict_codes(codes), 0.0, 1.0)
