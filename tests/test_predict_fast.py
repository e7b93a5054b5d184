"""Predictors at scale: one vectorised call per batch, saved fitted state loaded as it is
(no refit, no pickle), the lut as table lookups, the transfer predictor."""
from __future__ import annotations

import numpy as np
import pytest

from nasplat.predict import (LearnedPredictor, LUTPredictor, NotFitted, TransferPredictor, load_predictor,
                             save_predictor)
from nasplat.predict._fitted import Trees
from nasplat.predict.features import code_features
from nasplat.predict.lut import unit_set
from nasplat.space import load_space

from _hw_helpers import REPO


@pytest.fixture(scope="module")
def space():
    return load_space(REPO / "search_spaces" / "ofa_mbv3_digits.yaml")


def device(space, archs, power=1.0, seed=0):
    """A device whose latency is a per-stage cost model (+1% noise)."""
    rng = np.random.default_rng(seed)
    sc = space.stage_costs_batch(space.encode_batch(archs))
    y = 0.05 + (sc[:, :, 0] * np.linspace(1.0, 2.0, sc.shape[1])).sum(1) / 2e7
    return y**power * (1 + 0.01 * rng.standard_normal(len(y)))


def sample(space, n, seed):
    rng = np.random.default_rng(seed)
    return list({a.id: a for a in (space.sample(rng) for _ in range(n))}.values())


def test_learned_is_saved_fitted_and_loaded_without_refit(tmp_path, space):
    archs = sample(space, 140, 0)
    y = device(space, archs)
    p = LearnedPredictor(space, n_estimators=100).fit(archs[:100], y[:100])
    batch = p.predict(archs[100:])
    assert np.array_equal(batch, np.array([p.predict([a])[0] for a in archs[100:]]))  # one call == one by one
    assert np.array_equal(batch, p.predict_codes(space.encode_batch(archs[100:])))
    # the arrays reproduce scikit-learn's own model
    from sklearn.ensemble import GradientBoostingRegressor

    X = code_features(space, space.encode_batch(archs[:100]))
    sk = GradientBoostingRegressor(n_estimators=100, learning_rate=0.05, max_depth=3, subsample=0.8,
                                   random_state=0).fit(X, np.log(y[:100]))
    assert np.allclose(np.log(batch), sk.predict(code_features(space, space.encode_batch(archs[100:]))),
                       rtol=0, atol=1e-12)
    save_predictor(tmp_path / "p", p, archs[:100], y[:100], target="latency_ms")
    (tmp_path / "p" / "train.csv").unlink()  # nothing to refit on: the fitted arrays are loaded
    q = load_predictor(tmp_path / "p", space)
    assert np.array_equal(q.predict(archs[100:]), batch)
    trees = q.regressor_
    assert isinstance(trees, Trees) and trees._kernel is not None  # scikit-learn's compiled kernel
    X32 = code_features(space, space.encode_batch(archs[100:])).astype(np.float32)
    assert np.allclose(trees._numpy(X32), trees.predict(X32), rtol=0, atol=1e-12)  # the numpy reference agrees
    with pytest.raises(NotFitted, match="fit"):
        LearnedPredictor(space).predict(archs[:2])


@pytest.mark.parametrize("model", ["ridge", "rf", "ridge+gbrt"])
def test_every_regressor_round_trips_exactly(tmp_path, space, model):
    archs = sample(space, 80, 1)
    y = device(space, archs)
    opts = {"n_estimators": 30} if model != "ridge" else {}
    p = LearnedPredictor(space, model=model, **opts).fit(archs[:60], y[:60])
    save_predictor(tmp_path / model, p, archs[:60], y[:60], target="latency_ms")
    q = load_predictor(tmp_path / model, space)
    assert np.array_equal(q.predict(archs[60:]), p.predict(archs[60:]))
    assert np.mean(np.abs(p.predict(archs[60:]) / y[60:] - 1) < 0.10) > 0.5


def test_lut_lookups_equal_the_unit_sums(space):
    us = unit_set(space)
    keys = us.all_units()
    table = {k: 0.01 + 0.001 * i for i, k in enumerate(keys)}
    archs = sample(space, 200, 2)
    p = LUTPredictor(space, table).fit(archs[:50], device(space, archs[:50]))
    by_units = np.array([sum(table[k] for k in us.units(a)) for a in archs])
    assert np.allclose(p.block_sum(space.encode_batch(archs)), by_units, rtol=1e-12)
    assert np.allclose(p.predict(archs), p.scale_ * by_units + p.overhead_, rtol=1e-12)
    missing = dict(table)
    gone = next(k for k in keys if k.startswith("mb:"))
    del missing[gone]
    needs = [a for a in archs if gone in us.units(a)]
    assert needs
    from nasplat.errors import UserError

    with pytest.raises(UserError, match="lacks"):
        LUTPredictor(space, missing).fit(needs[:2], [1.0, 2.0])


def test_transfer_predictor_learns_a_new_device_from_few_measurements(tmp_path, space):
    known = sample(space, 200, 3)
    base = LearnedPredictor(space, n_estimators=200).fit(known, device(space, known))
    new_archs, test = sample(space, 25, 4), sample(space, 100, 5)
    new_y, test_y = device(space, new_archs, power=0.8, seed=1), device(space, test, power=0.8, seed=2)
    t = TransferPredictor(space, base, base_device="known").fit(new_archs, new_y)
    plain = LearnedPredictor(space).fit(new_archs, new_y)
    err = lambda p: np.mean(np.abs(p.predict(test) / test_y - 1))  # noqa: E731
    assert err(t) < 0.05 and err(t) < err(plain) / 2  # the known device carries the shape
    assert t.a_ == pytest.approx(0.8, abs=0.1)
    save_predictor(tmp_path / "t", t, new_archs, new_y, target="latency_ms", extra={"device": "new"})
    assert (tmp_path / "t" / "base" / "model.safetensors").is_file()
    again = load_predictor(tmp_path / "t", space, "new")
    assert np.array_equal(again.predict(test), t.predict(test))
