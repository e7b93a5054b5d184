"""Predictor metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nasplat.predict import regression_metrics


def test_metrics_values():
    t = np.array([1.0, 2.0, 4.0, 10.0])
    p = np.array([1.04, 2.2, 3.0, 10.0])  # errors +4%, +10%, -25%, 0%
    m = regression_metrics(t, p)
    assert m["n"] == 4
    assert m["rmse"] == pytest.approx(math.sqrt((0.04**2 + 0.2**2 + 1.0**2) / 4))
    assert m["rmspe"] == pytest.approx(100 * math.sqrt((0.04**2 + 0.1**2 + 0.25**2) / 4))
    assert m["within_5pct"] == 50.0 and m["within_10pct"] == 75.0
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)


def test_rank_metrics_see_inversions():
    m = regression_metrics([1, 2, 3, 4], [4, 3, 2, 1])
    assert m["spearman"] == pytest.approx(-1.0) and m["kendall"] == pytest.approx(-1.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        regression_metrics([1, 2], [1, 2, 3])
