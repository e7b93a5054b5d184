"""Latency and accuracy predictors (scikit-learn estimator style) and their metrics.

Public API (for the search stage)::

    from nasplat.predict import load_latency_predictor, load_accuracy_predictor
    lat = load_latency_predictor(exp.run_dir, "local-cpu", exp.space)  # run's own, else shipped
    ms = lat.predict(archs)                      # np.ndarray of milliseconds, one per Arch
    acc = load_accuracy_predictor(exp.run_dir, exp.space).predict(archs)  # top-1 in [0, 1]

    from nasplat.predict import LearnedPredictor, regression_metrics
    p = LearnedPredictor(space).fit(train_archs, train_ms)     # refit in a search loop (LINAS)
    regression_metrics(test_ms, p.predict(test_archs))         # RMSE, RMSPE, ±5/10%, ρ, τ

Kinds (``predictor.latency`` in the experiment): ``learned`` (regressor on one-hot +
per-stage MACs/params), ``lut`` (per-block table measured on the device + fitted
overhead) and ``transfer`` (a new device from few measurements, with a device already
profiled as the prior). Every kind predicts a batch in one vectorised call
(``predict_codes`` on index rows) and is saved with its fitted state (arrays in
safetensors, JSON): loading neither refits nor unpickles. The kinds' modules are light
(scikit-learn and torch load when a predictor is fitted or a lut measured).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from . import accuracy, learned, lut, transfer  # noqa: F401  (they register the predictor kinds; light modules)

_EXPORTS = {
    "PredictorConfig": ".config", "AccuracyPredictorConfig": ".config",
    "regression_metrics": ".metrics", "format_metrics": ".metrics",
    "arch_features": ".features", "code_features": ".features",
    "LearnedPredictor": ".learned", "REGRESSORS": ".learned",
    "LUTPredictor": ".lut", "LUT_FAMILIES": ".lut", "measure_units": ".lut",
    "AccuracyPredictor": ".accuracy", "TransferPredictor": ".transfer",
    "Predictor": "._base", "PREDICTORS": "._base", "NotFitted": "._base", "make_latency_predictor": "._base",
    "load_latency_predictor": "._base", "load_accuracy_predictor": "._base",
    "load_predictor": "._base", "save_predictor": "._base", "predictor_dir": "._base",
    "fit_latency": ".stage", "fit_accuracy": ".stage", "fit_and_evaluate": ".stage",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._base import (PREDICTORS, NotFitted, Predictor, load_accuracy_predictor, load_latency_predictor,
                        load_predictor, make_latency_predictor, predictor_dir, save_predictor)
    from .accuracy import AccuracyPredictor
    from .config import AccuracyPredictorConfig, PredictorConfig
    from .features import arch_features, code_features
    from .learned import REGRESSORS, LearnedPredictor
    from .lut import LUT_FAMILIES, LUTPredictor, measure_units
    from .metrics import format_metrics, regression_metrics
    from .stage import fit_accuracy, fit_and_evaluate, fit_latency
    from .transfer import TransferPredictor
