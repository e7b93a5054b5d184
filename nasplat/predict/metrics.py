"""Predictor metrics on held-out archs (docs/benchmarks.md, latency_predictor): RMSE, RMSPE, share of predictions
within ±5% / ±10% of the measurement, Spearman ρ and Kendall τ (scipy)."""
from __future__ import annotations

from typing import Any

import numpy as np


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1 or len(t) == 0:
        raise ValueError(f"need two equal-length 1-d arrays, got {t.shape} and {p.shape}")
    rel = (p - t) / np.where(t == 0, np.nan, t)
    out = {
        "n": float(len(t)),
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
        "rmspe": float(np.sqrt(np.nanmean(rel**2)) * 100),
        "mape": float(np.nanmean(np.abs(rel)) * 100),
        "within_5pct": float(np.mean(np.abs(rel) <= 0.05 + 1e-9) * 100),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10 + 1e-9) * 100),
    }
    if len(t) > 2 and np.ptp(t) > 0 and np.ptp(p) > 0:
        out["spearman"] = float(spearmanr(t, p).statistic)
        out["kendall"] = float(kendalltau(t, p).statistic)
    else:
        out["spearman"] = out["kendall"] = float("nan")
    return out


def format_metrics(m: dict[str, float]) -> str:
    return (f"n={int(m['n'])} RMSE={m['rmse']:.4g} RMSPE={m['rmspe']:.2f}% "
            f"±5%: {m['within_5pct']:.1f}% ±10%: {m['within_10pct']:.1f}% "
            f"Spearman={m['spearman']:.4f} Kendall={m['kendall']:.4f}")
