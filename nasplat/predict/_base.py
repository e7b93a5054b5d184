"""The predictor contract, the kinds' registry, persistence and the loading API.

A predictor follows scikit-learn's estimator contract: the constructor stores its
hyper-parameters (and the data it is built on: a lut's table, a transfer predictor's
base predictor), ``fit(archs, y)`` returns self and creates the attributes ending in
``_``, ``predict(archs)`` / ``predict_codes(index rows)`` are pure and answer a whole
batch in one vectorised call; predicting before fitting raises :class:`NotFitted`.

A fitted predictor lives in a folder::

    predictor.json     kind, hyper-parameters, space name + hash, device, metrics, versions
    train.csv          arch_id, arch (JSON), target — the data it was fitted on
    model.safetensors  the fitted arrays (learned kinds), loaded as they are
    lut.json           (lut) the per-unit table; base/ (transfer) the known device's predictor

Each kind saves and loads its own fitted state (:meth:`Predictor.save_state` /
:meth:`Predictor.load_state`), so loading never refits and never unpickles. A folder
without fitted state (written before ``nasplat-predictor/2``) is refitted on its
``train.csv`` (deterministic: fixed ``random_state``, exact float round trip).
"""
from __future__ import annotations

import csv
import json
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ..errors import UserError
from ..io import write_json, write_text
from ..paths import SHIPPED_PREDICTORS
from ..registry import Registry
from ..space import Arch, SearchSpace

FORMAT = "nasplat-predictor/2"
READABLE = ("nasplat-predictor/1", FORMAT)  # /1: no fitted state, refitted on load


class NotFitted(RuntimeError):
    """A predictor asked to predict (or be saved with its state) before ``fit``."""


class Predictor(ABC):
    """A latency or accuracy predictor (see the module docstring). Stable plug-in surface."""

    kind: ClassVar[str]  # set by the registry
    target: ClassVar[str] = "latency_ms"  # what it predicts (the training CSV's column)
    space: SearchSpace

    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The JSON hyper-parameters the constructor was given (not the data inputs)."""

    @abstractmethod
    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> Predictor:
        """Fit on ``archs`` and their measured targets ``y``; returns self."""

    @abstractmethod
    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        """Predictions for index rows (``space.encode_batch``), one vectorised call."""

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predictions for ``archs``."""
        archs = list(archs)
        if not archs:
            return np.zeros(0)
        return self.predict_codes(self.space.encode_batch(archs))

    def _check_fitted(self, *attrs: str) -> None:
        if any(not hasattr(self, a) for a in attrs):
            raise NotFitted(f"this {self.kind} predictor is not fitted yet; call fit(archs, y) first")

    @abstractmethod
    def save_state(self, folder: Path) -> dict[str, Any]:
        """Called by :func:`save_predictor`: write the fitted state into ``folder``;
        returns what ``predictor.json`` records of it."""

    @classmethod
    @abstractmethod
    def load_state(cls, space: SearchSpace, params: dict[str, Any], folder: Path,
                   meta: dict[str, Any]) -> Predictor | None:
        """Called by :func:`load_predictor`: the fitted predictor from ``folder``, or
        None when the folder holds no fitted state (it is then refitted)."""

    @classmethod
    def inputs(cls, exp: Any, profile: Any, statistic: str, address: str | None, quiet: bool,
               options: dict[str, Any]) -> dict[str, Any]:
        """Called by ``nasplat predictor fit`` before construction: the data this kind is
        built on besides the measurements (a lut's measured table, a base predictor)."""
        return {}


PREDICTORS: Registry[type[Predictor]] = Registry("predictor", name_attr="kind")


def predictor_class(kind: str, file: Any = None, field: str | None = None) -> type[Predictor]:
    """The registered class of ``kind`` (a one-line error listing the known kinds; the
    package's ``__init__`` imports the modules that register them)."""
    return PREDICTORS.get(kind, file, field)


def latency_kinds() -> list[str]:
    return [k for k in PREDICTORS if predictor_class(k).target == "latency_ms"]


def make_latency_predictor(kind: str, space: SearchSpace, inputs: dict[str, Any] | None = None,
                           options: dict[str, Any] | None = None, file: Any = None,
                           field: str = "predictor.latency") -> Predictor:
    """An unfitted latency predictor of ``kind``."""
    cls = predictor_class(kind, file, field)
    if cls.target != "latency_ms":
        raise UserError(f"{kind!r} is not a latency predictor (latency kinds: {', '.join(latency_kinds())})",
                        file, field)
    try:
        return cls(space, **(inputs or {}), **(options or {}))
    except TypeError as e:
        raise UserError(f"bad options for the {kind} predictor: {e}", file, "predictor.options") from None


def write_training_csv(path: Path, archs: Sequence[Arch], y: Sequence[float], target: str) -> None:
    import io as _io

    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch_id", "arch", target])
    for a, v in zip(archs, y):
        w.writerow([a.id, a.to_json(), repr(float(v))])
    write_text(path, buf.getvalue())


def read_training_csv(path: Path, space: SearchSpace, target: str) -> tuple[list[Arch], np.ndarray]:
    if not path.is_file():
        raise UserError("predictor training data not found", path)
    archs, ys = [], []
    with open(path, newline="") as f:
        for i, r in enumerate(csv.DictReader(f), start=2):
            try:
                archs.append(space.arch(json.loads(r["arch"]), str(path)))
                ys.append(float(r[target]))
            except (KeyError, TypeError, ValueError, json.JSONDecodeError):
                raise UserError(f"bad row (needs arch JSON and {target})", path, f"line {i}") from None
    return archs, np.asarray(ys, dtype=np.float64)


def save_predictor(folder: str | Path, predictor: Predictor, archs: Sequence[Arch] | None, y: Sequence[float] | None,
                   *, target: str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``predictor.json``, ``train.csv`` (when ``archs`` are given) and the fitted
    state into ``folder``."""
    import onnxruntime
    import sklearn

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    space = predictor.space
    if archs is not None and y is not None:
        write_training_csv(folder / "train.csv", archs, y, target)
    meta = {"format": FORMAT, "kind": predictor.kind, "params": predictor.get_params(), "target": target,
            "space": space.config.name, "space_hash": space.hash(), "n_train": len(archs or []),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"scikit-learn": sklearn.__version__, "onnxruntime": onnxruntime.__version__},
            **predictor.save_state(folder), **(extra or {})}
    write_json(folder / "predictor.json", meta)
    return folder


def read_meta(folder: Path) -> dict[str, Any]:
    meta_path = folder / "predictor.json"
    if not meta_path.is_file():
        raise UserError("no fitted predictor here (predictor.json missing)", folder)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"not valid JSON: {e}", meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") not in READABLE:
        raise UserError(f"not a {FORMAT} file", meta_path, "format")
    for key in ("target", "kind"):
        if not isinstance(meta.get(key), str):
            raise UserError("missing or not a string", meta_path, key)
    return meta


def load_predictor(folder: str | Path, space: SearchSpace, device: str | None = None) -> Predictor:
    """The saved predictor, as fitted (a folder without fitted state is refitted on its
    training CSV); checks the space hash (and, with ``device``, that it was fitted for
    that device)."""
    folder = Path(folder)
    meta = read_meta(folder)
    meta_path = folder / "predictor.json"
    if meta.get("space_hash") != space.hash():
        raise UserError(f"predictor was fitted on another search space ({meta.get('space')}, hash "
                        f"{meta.get('space_hash')}; this space {space.hash()})", meta_path, "space_hash")
    if device is not None and meta.get("device") not in (None, device):
        raise UserError(f"predictor was fitted for device {meta.get('device')!r}, not {device!r}", meta_path,
                        "device")
    cls = predictor_class(meta["kind"], str(meta_path), "kind")
    params = dict(meta.get("params", {}))
    pred = cls.load_state(space, params, folder, meta)
    if pred is None:  # no fitted state in the folder (format /1): refit on the training data
        archs, y = read_training_csv(folder / "train.csv", space, meta["target"])
        pred = cls(space, **params).fit(archs, y)
    return pred


def predictor_dir(run_dir: str | Path, device: str) -> Path:
    return Path(run_dir) / "predictors" / device


def latency_predictor_folder(run_dir: str | Path | None, device: str, space: SearchSpace) -> Path | None:
    """The folder :func:`load_latency_predictor` reads for ``device``: the run's own, else
    the shipped one for this space; None when there is neither."""
    if run_dir is not None and (predictor_dir(run_dir, device) / "predictor.json").is_file():
        return predictor_dir(run_dir, device)
    shipped = SHIPPED_PREDICTORS / space.config.name / device
    return shipped if (shipped / "predictor.json").is_file() else None


def this_machine(profile: Any) -> dict[str, Any]:
    """What a latency measurement with ``profile`` depends on besides the profile: the
    CPU model, the ONNX Runtime version and the threads (a shipped predictor records the
    same for the machine it was measured on, under ``machine``)."""
    import onnxruntime

    from ..hw.runner import cpu_model

    return {"cpu": cpu_model(), "onnxruntime": onnxruntime.__version__,
            "intra_op_threads": int(profile.intra_op_threads)}


def shipped_mismatch(folder: Path, device: str, profile: Any) -> str | None:
    """Why the shipped predictor in ``folder`` does not describe ``profile`` on this
    machine (one line), or None when it does."""
    shipped = read_meta(folder).get("machine")
    if getattr(profile, "where", "local") != "local":
        return (f"the shipped latency predictor for {device!r} was measured on a local CPU, and profile "
                f"{device!r} measures elsewhere (where: {profile.where})")
    here = this_machine(profile)
    if not isinstance(shipped, dict):
        diff = ["the machine it was measured on is not recorded"]
    else:
        diff = [f"{k} {shipped.get(k)!r} there, {v!r} here" for k, v in here.items() if shipped.get(k) != v]
    if not diff:
        return None
    return f"the shipped latency predictor for {device!r} ({folder}) does not describe this machine: {'; '.join(diff)}"


def load_latency_predictor(run_dir: str | Path | None, device: str, space: SearchSpace,
                           profile: Any = None, check_machine: bool = True) -> Predictor:
    """The latency predictor for ``device``: the run's own
    (``runs/<name>/predictors/<device>/``), else a shipped one for this space
    (``predictors/<space-name>/<device>/``, same space hash) when it was measured on a
    machine like this one (CPU model, ONNX Runtime version, the threads of ``profile``,
    default: the shipped profile named ``device``); ``check_machine=False`` skips that
    check (a transfer predictor's base is another machine on purpose).
    ``.predict(archs)`` returns milliseconds."""
    folder = latency_predictor_folder(run_dir, device, space)
    if folder is not None and SHIPPED_PREDICTORS in folder.parents and check_machine:
        if profile is None:
            from ..hw.profile import load_profile

            profile = load_profile(device, None, None, "device")
        why = shipped_mismatch(folder, device, profile)
        if why:
            raise UserError(f"{why}; measure it here: `nasplat profile EXP --device {device}` and `nasplat predictor "
                            f"fit EXP --device {device}` (`nasplat run` does both)", None, "device")
    if folder is not None:
        return load_predictor(folder, space, device)
    tried = ([str(predictor_dir(run_dir, device))] if run_dir is not None else []) + \
        [str(SHIPPED_PREDICTORS / space.config.name / device)]
    raise UserError(f"no latency predictor for device {device!r} (looked in {', '.join(tried)}); run "
                    f"`nasplat profile EXP --device {device}` and `nasplat predictor fit EXP --device {device}`",
                    None, "device")


def load_accuracy_predictor(run_dir: str | Path, space: SearchSpace) -> Predictor:
    return load_predictor(Path(run_dir) / "predictors" / "accuracy", space)
