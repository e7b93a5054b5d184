"""``learned``: a scikit-learn regressor on arch features (one-hot choices + per-stage
analytic MACs/params), nn-Meter style (nn-Meter fits random forests per fused kernel;
here one regressor per network, since the features carry the per-stage costs).

Estimator contract: the constructor stores hyper-parameters, ``fit`` returns self,
``predict`` is pure. The fitted regressor becomes plain arrays (:mod:`._fitted`),
saved in ``model.safetensors`` and loaded as they are: nothing is pickled or refitted.
Departure from scikit-learn's contract: extra keyword options are forwarded to the
regressor (``n_estimators``, ``alpha``, …), so the signature is not exhaustive.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..registry import Registry
from ..space import Arch, SearchSpace
from ._base import PREDICTORS, Predictor
from ._fitted import Fitted, Linear, Sum, Trees, read_fitted, write_fitted
from .features import code_features

Fit = Callable[[np.ndarray, np.ndarray], Fitted]

# name -> factory(random_state, **options) returning fit(X, y) -> Fitted
REGRESSORS: Registry[Callable[..., Fit]] = Registry("regressor")


@REGRESSORS.register("ridge")
def _ridge(random_state: int = 0, alpha: float = 1e-3) -> Fit:
    def fit(X: np.ndarray, y: np.ndarray) -> Fitted:
        from sklearn.linear_model import Ridge
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(X)
        ridge = Ridge(alpha=alpha).fit(scaler.transform(X), y)
        return Linear(scaler.mean_, scaler.scale_, ridge.coef_, float(ridge.intercept_))

    return fit


@REGRESSORS.register("gbrt")
def _gbrt(random_state: int = 0, n_estimators: int = 600, learning_rate: float = 0.05, max_depth: int = 3,
          subsample: float = 0.8) -> Fit:
    def fit(X: np.ndarray, y: np.ndarray) -> Fitted:
        from sklearn.ensemble import GradientBoostingRegressor

        m = GradientBoostingRegressor(n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth,
                                      subsample=subsample, random_state=random_state).fit(X, y)
        offset = float(np.ravel(m.init_.predict(X[:1]))[0])
        return Trees.from_sklearn_trees([e[0].tree_ for e in m.estimators_], offset, learning_rate)

    return fit


@REGRESSORS.register("rf")
def _rf(random_state: int = 0, n_estimators: int = 300, min_samples_leaf: int = 1) -> Fit:
    def fit(X: np.ndarray, y: np.ndarray) -> Fitted:
        from sklearn.ensemble import RandomForestRegressor

        m = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                  random_state=random_state, n_jobs=1).fit(X, y)
        return Trees.from_sklearn_trees([e.tree_ for e in m.estimators_], 0.0, 1.0 / len(m.estimators_))

    return fit


@REGRESSORS.register("ridge+gbrt")
def _ridge_gbrt(random_state: int = 0, alpha: float = 1e-3, n_estimators: int = 300,
                learning_rate: float = 0.05, max_depth: int = 3) -> Fit:
    """A linear model (captures the near-additive cost) plus gradient-boosted trees on
    its residuals (captures what is not additive)."""

    def fit(X: np.ndarray, y: np.ndarray) -> Fitted:
        base = _ridge(random_state, alpha)(X, y)
        return Sum(base, _gbrt(random_state, n_estimators, learning_rate, max_depth)(X, y - base.predict(X)))

    return fit


@PREDICTORS.register("learned")
class LearnedPredictor(Predictor):
    """Regressor on ``code_features``; ``log_target`` fits log(y) (relative errors).

    Default: gradient-boosted trees on log latency — the best of ridge / random forest /
    boosted trees / ridge + boosted residuals on this project's measurements (see
    bench/RESULTS.md, latency_predictor)."""

    def __init__(self, space: SearchSpace, model: str = "gbrt", log_target: bool = True,
                 costs: bool = True, random_state: int = 0, **model_options: Any):
        self.space = space
        self.model = model
        self.log_target = log_target
        self.costs = costs
        self.random_state = random_state
        self.model_options = dict(model_options)

    def get_params(self) -> dict[str, Any]:
        return {"model": self.model, "log_target": self.log_target, "costs": self.costs,
                "random_state": self.random_state, **self.model_options}

    def regressor_options(self) -> dict[str, Any]:
        """The options the regressor is built with (subclasses add defaults)."""
        return dict(self.model_options)

    def features(self, codes: np.ndarray) -> np.ndarray:
        return code_features(self.space, codes, self.costs)

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> LearnedPredictor:
        factory = REGRESSORS.get(self.model, None, "predictor.options.model")
        y = np.asarray(y, dtype=np.float64)
        X = self.features(self.space.encode_batch(list(archs)))
        self.regressor_ = factory(random_state=self.random_state, **self.regressor_options())(
            X, np.log(y) if self.log_target else y)
        return self

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted("regressor_")
        if not len(codes):
            return np.zeros(0)
        p = self.regressor_.predict(self.features(codes))
        return np.exp(p) if self.log_target else p

    def save_state(self, folder: Path) -> dict[str, Any]:
        self._check_fitted("regressor_")
        write_fitted(folder / "model.safetensors", self.regressor_)
        return {"state": "model.safetensors"}

    @classmethod
    def load_state(cls, space: SearchSpace, params: dict[str, Any], folder: Path,
                   meta: dict[str, Any]) -> LearnedPredictor | None:
        path = folder / "model.safetensors"
        if meta.get("state") != "model.safetensors" or not path.is_file():
            return None
        pred = cls(space, **params)
        pred.regressor_ = read_fitted(path)
        return pred
