"""The experiment's ``predictor:`` section (``nasplat predictor fit``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccuracyPredictorConfig(_Strict):
    kind: str = "ridge_rbf"  # a name in ACCURACY_PREDICTORS
    samples: int = Field(0, ge=0, le=100_000)  # archs evaluated through the supernet; 0 = not fitted
    options: dict[str, Any] = {}


class PredictorConfig(_Strict):
    latency: str = "learned"  # a latency kind in PREDICTORS: "learned", "lut" or "transfer"
    options: dict[str, Any] = {}  # hyper-parameters of the latency predictor
    # which latency statistic to fit: the profile's (the latency_ms column) or one
    # recomputed from the raw samples; a low percentile is robust to a busy machine
    statistic: Literal["profile", "median", "mean", "min", "p10", "p25"] = "profile"
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # held out for the reported metrics
    seed: int | None = None  # default: the experiment's seed
    accuracy: AccuracyPredictorConfig = AccuracyPredictorConfig()
