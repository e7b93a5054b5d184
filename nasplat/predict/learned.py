"""``learned``: a scikit-learn regressor on arch features (one-hot choices + per-stage
analytic MACs/params), nn-Meter style (nn-Meter fits random forests per fused kernel;
here one regressor per network, since the features carry the per-stage costs).

Estimator contract: the constructor stores hyper-parameters, ``fit`` returns self,
``predict`` is pure. Persistence is the training data + hyper-parameters (refit on
load, deterministic through ``random_state``): nothing is pickled.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..registry import Registry
from ..space import Arch, SearchSpace
from .features import arch_features

# name -> factory(random_state, **options) returning an unfitted sklearn regressor
REGRESSORS: Registry[Callable[..., Any]] = Registry("regressor")


@REGRESSORS.register("ridge")
def _ridge(random_state: int = 0, alpha: float = 1e-3):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


@REGRESSORS.register("gbrt")
def _gbrt(random_state: int = 0, n_estimators: int = 600, learning_rate: float = 0.05, max_depth: int = 3,
          subsample: float = 0.8):
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth,
                                     subsample=subsample, random_state=random_state)


@REGRESSORS.register("rf")
def _rf(random_state: int = 0, n_estimators: int = 300, min_samples_leaf: int = 1):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                 random_state=random_state, n_jobs=1)


@REGRESSORS.register("ridge+gbrt")
def _ridge_gbrt(random_state: int = 0, alpha: float = 1e-3, n_estimators: int = 300,
                learning_rate: float = 0.05, max_depth: int = 3):
    """A linear model (captures the near-additive cost) plus gradient-boosted trees on
    its residuals (captures what is not additive)."""
    return _Residual(_ridge(random_state, alpha), _gbrt(random_state, n_estimators, learning_rate, max_depth))


class _Residual:
    def __init__(self, base, second):
        self.base, self.second = base, second

    def fit(self, X, y):
        self.base.fit(X, y)
        self.second.fit(X, y - self.base.predict(X))
        return self

    def predict(self, X):
        return self.base.predict(X) + self.second.predict(X)


class LearnedPredictor:
    """Regressor on ``arch_features``; ``log_target`` fits log(y) (relative errors).

    Default: gradient-boosted trees on log latency — the best of ridge / random forest /
    boosted trees / ridge + boosted residuals on this project's measurements (see
    bench/RESULTS.md, latency_predictor)."""

    kind = "learned"

    def __init__(self, space: SearchSpace, model: str = "gbrt", log_target: bool = True,
                 costs: bool = True, random_state: int = 0, **model_options: Any):
        self.space = space
        self.model = model
        self.log_target = log_target
        self.costs = costs
        self.random_state = random_state
        self.model_options = dict(model_options)
        REGRESSORS.get(model, None, "predictor.options.model")

    def get_params(self) -> dict[str, Any]:
        return {"model": self.model, "log_target": self.log_target, "costs": self.costs,
                "random_state": self.random_state, **self.model_options}

    def features(self, archs: Sequence[Arch]) -> np.ndarray:
        return arch_features(self.space, archs, self.costs)

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "LearnedPredictor":
        y = np.asarray(y, dtype=np.float64)
        self.regressor_ = REGRESSORS.get(self.model)(random_state=self.random_state, **self.model_options)
        self.regressor_.fit(self.features(archs), np.log(y) if self.log_target else y)
        return self

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if not len(archs):
            return np.zeros(0)
        p = np.asarray(self.regressor_.predict(self.features(archs)), dtype=np.float64)
        return np.exp(p) if self.log_target else p
