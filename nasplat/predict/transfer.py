"""``transfer``: a new device's latency predictor from few measurements, with a device
already profiled as the prior.

Profiling a device costs about a second or two per arch, and the shipped predictors
needed 300-400 archs. HELP (Lee et al., NeurIPS 2021) makes a new device cheap by
describing it through latencies it shares with devices already known. Here the known
device's fitted predictor ``b`` is that description, and the new device is

    log y = a · log b(x) + c + r(x)

with ``a, c`` by least squares (two numbers: a handful of measurements fix them) and
``r`` a ridge regression on the arch features (one-hot choices + per-stage costs,
standardised) fitted on what the linear map leaves, its penalty chosen by
leave-one-out cross-validation (so with few measurements it stays near zero).
Deviation from HELP: one known device and no meta-learning over many devices (HELP
meta-trains a predictor on tens of devices); what carries over is the idea that a known
device's latencies are the features of a new one.

Saved with its base predictor in ``base/``, so the folder is self-contained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from ..space import Arch, SearchSpace
from ._base import PREDICTORS, Predictor, load_predictor, save_predictor
from ._fitted import Linear, read_fitted, write_fitted
from .features import code_features

ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))


@PREDICTORS.register("transfer")
class TransferPredictor(Predictor):
    def __init__(self, space: SearchSpace, base: Predictor | None = None, base_device: str = "",
                 residual: bool = True):
        self.space = space
        self.base = base
        self.base_device = base_device
        self.residual = residual

    def get_params(self) -> dict[str, Any]:
        return {"base_device": self.base_device, "residual": self.residual}

    def _prior(self, codes: np.ndarray) -> np.ndarray:
        if self.base is None:
            raise UserError("a transfer predictor needs the known device's predictor (options.base_device)", None,
                            "predictor.options.base_device")
        return np.log(np.maximum(self.base.predict_codes(codes), 1e-9))

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> TransferPredictor:
        from sklearn.linear_model import RidgeCV
        from sklearn.preprocessing import StandardScaler

        codes = self.space.encode_batch(list(archs))
        ly = np.log(np.asarray(y, dtype=np.float64))
        b = self._prior(codes)
        if len(ly) >= 3 and np.ptp(b) > 0:
            self.a_, self.c_ = (float(v) for v in np.polyfit(b, ly, 1))
        else:
            self.a_, self.c_ = 1.0, float(np.mean(ly - b)) if len(ly) else 0.0
        rest = ly - (self.a_ * b + self.c_)
        n_feat = code_features(self.space, codes[:1]).shape[1]
        self.residual_ = Linear(np.zeros(n_feat), np.ones(n_feat), np.zeros(n_feat), 0.0)
        if self.residual and len(ly) >= 5:
            X = code_features(self.space, codes)
            scaler = StandardScaler().fit(X)
            ridge = RidgeCV(alphas=ALPHAS).fit(scaler.transform(X), rest)
            self.residual_ = Linear(scaler.mean_, scaler.scale_, ridge.coef_, float(ridge.intercept_))
        return self

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted("a_", "c_", "residual_")
        if not len(codes):
            return np.zeros(0)
        log = self.a_ * self._prior(codes) + self.c_ + self.residual_.predict(code_features(self.space, codes))
        return np.exp(log)

    def save_state(self, folder: Path) -> dict[str, Any]:
        self._check_fitted("a_", "c_", "residual_")
        assert self.base is not None
        save_predictor(folder / "base", self.base, None, None, target="latency_ms",
                       extra={"device": self.base_device})
        write_fitted(folder / "model.safetensors", self.residual_)
        return {"state": "model.safetensors", "a": self.a_, "c": self.c_}

    @classmethod
    def load_state(cls, space: SearchSpace, params: dict[str, Any], folder: Path,
                   meta: dict[str, Any]) -> TransferPredictor:
        path = folder / "model.safetensors"
        if not path.is_file() or not (folder / "base").is_dir():
            raise UserError("a transfer predictor needs model.safetensors and its base/ predictor", folder)
        pred = cls(space, load_predictor(folder / "base", space), **params)
        try:
            pred.a_, pred.c_ = float(meta["a"]), float(meta["c"])
        except (KeyError, TypeError, ValueError):
            raise UserError("missing or not a number", folder / "predictor.json", "a") from None
        pred.residual_ = read_fitted(path)
        return pred

    @classmethod
    def inputs(cls, exp: Any, profile: Any, statistic: str, address: str | None, quiet: bool,
               options: dict[str, Any]) -> dict[str, Any]:
        from ._base import load_latency_predictor

        device = options.get("base_device")
        if not device:
            raise UserError("a transfer predictor needs options.base_device: a device already profiled",
                            exp.path, "predictor.options.base_device")
        # the base describes another machine on purpose: no machine check
        return {"base": load_latency_predictor(exp.run_dir, device, exp.space, check_machine=False)}
