"""Fitted regressors as plain arrays: saved in safetensors, loaded without refitting
and without unpickling anything.

A scikit-learn regressor is converted right after ``fit`` into a :class:`Fitted` model
(linear: centred and scaled coefficients; trees: every node's feature, threshold,
children and leaf value) and every prediction, before or after a save, goes through
that model, so a loaded predictor answers exactly what the fitted one did.

Trees are evaluated by scikit-learn's own compiled kernel (``Tree`` objects rebuilt
from the arrays, summed by ``predict_stages``, what ``GradientBoostingRegressor``
uses), with a numpy traversal as the reference: on load both answer a few probe rows
and the numpy one is used if they ever disagree (a scikit-learn that changed its
internals). Comparisons are made on features rounded to float32, as scikit-learn's
trees make them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import UserError
from ..io import write_bytes
from ..registry import Registry


class Fitted(ABC):
    """A fitted regressor: ``predict`` and its arrays."""

    kind: ClassVar[str]  # set by the registry

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for the rows of ``X`` (float64)."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to predict, as named arrays."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Fitted:
        """Rebuild from :meth:`arrays`."""


FITTED: Registry[type[Fitted]] = Registry("fitted model", name_attr="kind")


@FITTED.register("linear")
class Linear(Fitted):
    """``((X - mean) / scale) @ coef + intercept``."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float):
        self.mean, self.scale, self.coef, self.intercept = mean, scale, coef, float(intercept)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": np.array([self.intercept])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Linear:
        return cls(a["mean"], a["scale"], a["coef"], float(a["intercept"][0]))


@FITTED.register("trees")
class Trees(Fitted):
    """``offset + scale * Σ_t leaf value of tree t`` (boosting: the initial prediction
    and the learning rate; a forest: 0 and 1 / number of trees)."""

    def __init__(self, nodes: dict[str, np.ndarray], starts: np.ndarray, offset: float, scale: float):
        self.nodes = {k: np.asarray(v) for k, v in nodes.items()}  # left, right, feature, threshold, value
        self.starts = np.asarray(starts, dtype=np.int64)  # first node of every tree (+ the end)
        self.offset, self.scale = float(offset), float(scale)
        self._kernel = _sklearn_kernel(self)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        if self._kernel is not None:
            return self._kernel(X32)
        return self._numpy(X32)

    def _numpy(self, X32: np.ndarray) -> np.ndarray:
        """Reference traversal: every tree at once, one level per step."""
        n = self.nodes
        X = X32.astype(np.float64)
        node = np.repeat(self.starts[:-1, None], len(X), axis=1)  # (trees, rows), global node index
        cols = np.arange(len(X))[None, :]
        while True:
            left = n["left"][node]
            inner = left >= 0
            if not inner.any():
                break
            go_left = X[cols, np.where(inner, n["feature"][node], 0)] <= n["threshold"][node]
            child = np.where(go_left, left, n["right"][node])
            node = np.where(inner, child + self.starts[:-1, None], node)  # children are tree-local
        return self.offset + self.scale * n["value"][node].sum(0)

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{f"node_{k}": v for k, v in self.nodes.items()}, "starts": self.starts,
                "offset_scale": np.array([self.offset, self.scale])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Trees:
        nodes = {k[5:]: v for k, v in a.items() if k.startswith("node_")}
        return cls(nodes, a["starts"], float(a["offset_scale"][0]), float(a["offset_scale"][1]))

    @classmethod
    def from_sklearn_trees(cls, trees: list[Any], offset: float, scale: float) -> Trees:
        parts = [(t.children_left, t.children_right, t.feature, t.threshold, t.value[:, 0, 0]) for t in trees]
        starts = np.cumsum([0] + [len(p[0]) for p in parts])
        nodes = {k: np.concatenate([p[i] for p in parts]).astype(dt) for i, (k, dt) in
                 enumerate([("left", np.int64), ("right", np.int64), ("feature", np.int64),
                            ("threshold", np.float64), ("value", np.float64)])}
        return cls(nodes, starts, offset, scale)


def _sklearn_kernel(trees: Trees) -> Callable[[np.ndarray], np.ndarray] | None:
    """scikit-learn's compiled tree kernel over ``trees``' arrays, checked against the
    numpy traversal on probe rows; None when unavailable or different."""
    try:
        from sklearn.ensemble._gradient_boosting import predict_stages
        from sklearn.tree._tree import NODE_DTYPE, Tree

        n_features = int(trees.nodes["feature"].max()) + 1 if len(trees.nodes["feature"]) else 1
        holders = np.empty((len(trees.starts) - 1, 1), dtype=object)
        for t in range(len(trees.starts) - 1):
            lo, hi = trees.starts[t], trees.starts[t + 1]
            nodes = np.zeros(hi - lo, dtype=NODE_DTYPE)
            nodes["left_child"] = trees.nodes["left"][lo:hi]
            nodes["right_child"] = trees.nodes["right"][lo:hi]
            nodes["feature"] = np.where(trees.nodes["left"][lo:hi] >= 0, trees.nodes["feature"][lo:hi], -2)
            nodes["threshold"] = trees.nodes["threshold"][lo:hi]
            depth = _depth(trees.nodes["left"][lo:hi], trees.nodes["right"][lo:hi])
            tree = Tree(n_features, np.array([1], dtype=np.intp), 1)
            tree.__setstate__({"max_depth": depth, "node_count": hi - lo, "nodes": nodes,
                               "values": trees.nodes["value"][lo:hi].reshape(-1, 1, 1).copy()})
            holders[t, 0] = _Holder(tree)

        def kernel(X32: np.ndarray) -> np.ndarray:
            out = np.full((len(X32), 1), trees.offset)
            if len(X32):
                predict_stages(holders, X32, trees.scale, out)
            return out[:, 0]

        probe = np.random.default_rng(0).normal(size=(16, n_features)).astype(np.float32)
        probe[::2] = np.abs(probe[::2]) < 0.5  # one-hot-like rows too
        if np.allclose(kernel(probe), trees._numpy(probe), rtol=1e-12, atol=1e-12):
            return kernel
    except Exception:  # noqa: BLE001 - any change in scikit-learn's internals: use numpy
        pass
    return None


class _Holder:
    __slots__ = ("tree_",)

    def __init__(self, tree: Any):
        self.tree_ = tree


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    depth = np.zeros(len(left), dtype=np.int64)
    for i in range(len(left)):  # parents come before their children in scikit-learn's layout
        for c in (left[i], right[i]):
            if c >= 0:
                depth[c] = depth[i] + 1
    return int(depth.max()) if len(depth) else 0


@FITTED.register("sum")
class Sum(Fitted):
    """The sum of two fitted models (a linear model plus trees on its residuals)."""

    def __init__(self, first: Fitted, second: Fitted):
        self.first, self.second = first, second

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.first.predict(X) + self.second.predict(X)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for tag, part in (("a", self.first), ("b", self.second)):
            out[f"{tag}.kind.{part.kind}"] = np.zeros(0)
            out.update({f"{tag}.{k}": v for k, v in part.arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Sum:
        parts = []
        for tag in ("a", "b"):
            kind = next(k.split(".", 2)[2] for k in a if k.startswith(f"{tag}.kind."))
            sub = {k[len(tag) + 1:]: v for k, v in a.items() if k.startswith(f"{tag}.") and ".kind." not in k}
            parts.append(FITTED.get(kind).from_arrays(sub))
        return cls(*parts)


def write_fitted(path: Path, model: Fitted) -> None:
    """Save ``model`` as safetensors (atomically)."""
    from safetensors.numpy import save

    write_bytes(path, save({f"kind.{model.kind}": np.zeros(0), **model.arrays()}))


def read_fitted(path: Path) -> Fitted:
    """The model :func:`write_fitted` saved (a damaged or foreign file is a UserError)."""
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
        kind = next(k[5:] for k in arrays if k.startswith("kind."))
        return FITTED.get(kind).from_arrays({k: v for k, v in arrays.items() if not k.startswith("kind.")})
    except Exception as e:  # noqa: BLE001 - anything unreadable is reported on one line
        raise UserError(f"cannot read the fitted model ({type(e).__name__}: {e})", path) from None
