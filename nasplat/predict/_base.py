"""Predictor registries, persistence and the public loading API.

A fitted predictor lives in a folder::

    predictor.json   kind, hyper-parameters, space name + hash, device, metrics, versions
    train.csv        arch_id, arch (JSON), target — the data it was fitted on
    lut.json         (lut only) the per-unit table

Loading refits on ``train.csv`` (deterministic: fixed ``random_state``, exact float
round trip through the CSV), so nothing is pickled and a newer scikit-learn still
loads it (nn-Meter #131: pickled predictors break across versions).
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from ..io import write_json, write_text
from ..paths import SHIPPED_PREDICTORS
from ..registry import Registry
from ..space import Arch, SearchSpace

FORMAT = "nasplat-predictor/1"

# latency predictor kind -> factory(space, folder-or-None, **options)
LATENCY_PREDICTORS: Registry[Callable[..., Any]] = Registry("latency predictor")


def _learned_factory(space: SearchSpace, table: dict | None = None, **options: Any):
    from .learned import LearnedPredictor

    return LearnedPredictor(space, **options)


def _lut_factory(space: SearchSpace, table: dict | None = None, **options: Any):
    from .lut import LUTPredictor

    if table is None:
        raise UserError("a lut predictor needs its table (lut.json)", None, "predictor")
    return LUTPredictor(space, table, **options)


LATENCY_PREDICTORS.register("learned")(_learned_factory)
LATENCY_PREDICTORS.register("lut")(_lut_factory)


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


def save_predictor(folder: str | Path, predictor: Any, archs: Sequence[Arch], y: Sequence[float], *,
                   target: str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``predictor.json`` + ``train.csv`` (+ ``lut.json``) into ``folder``."""
    import onnxruntime
    import sklearn

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    space = predictor.space
    write_training_csv(folder / "train.csv", archs, y, target)
    meta = {"format": FORMAT, "kind": predictor.kind, "params": predictor.get_params(), "target": target,
            "space": space.config.name, "space_hash": space.hash(), "n_train": len(archs),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"scikit-learn": sklearn.__version__, "onnxruntime": onnxruntime.__version__},
            **(extra or {})}
    if predictor.kind == "lut":
        write_json(folder / "lut.json", {"table": predictor.table})
        meta["scale"], meta["overhead"] = predictor.scale_, predictor.overhead_
    write_json(folder / "predictor.json", meta)
    return folder


def load_predictor(folder: str | Path, space: SearchSpace, device: str | None = None):
    """Rebuild a saved predictor (refit on its training CSV); checks the space hash
    (and, with ``device``, that it was fitted for that device)."""
    folder = Path(folder)
    meta_path = folder / "predictor.json"
    if not meta_path.is_file():
        raise UserError("no fitted predictor here (predictor.json missing)", folder)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"not valid JSON: {e}", meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"not a {FORMAT} file", meta_path, "format")
    if meta.get("space_hash") != space.hash():
        raise UserError(f"predictor was fitted on another search space ({meta.get('space')}, hash "
                        f"{meta.get('space_hash')}; this space {space.hash()})", meta_path, "space_hash")
    if device is not None and meta.get("device") not in (None, device):
        raise UserError(f"predictor was fitted for device {meta.get('device')!r}, not {device!r}", meta_path,
                        "device")
    for key in ("target", "kind"):
        if not isinstance(meta.get(key), str):
            raise UserError("missing or not a string", meta_path, key)
    archs, y = read_training_csv(folder / "train.csv", space, meta["target"])
    params = dict(meta.get("params", {}))
    kind = meta["kind"]
    if kind == "accuracy":
        from .accuracy import AccuracyPredictor

        return AccuracyPredictor(space, **params).fit(archs, y)
    table = None
    if kind == "lut":
        table = json.loads((folder / "lut.json").read_text())["table"]
    pred = LATENCY_PREDICTORS.get(kind, str(meta_path), "kind")(space, table, **params)
    if kind == "lut":  # the fitted terms are stored exactly; no refit needed
        pred.scale_, pred.overhead_ = float(meta["scale"]), float(meta["overhead"])
        return pred
    return pred.fit(archs, y)


def predictor_dir(run_dir: str | Path, device: str) -> Path:
    return Path(run_dir) / "predictors" / device


def load_latency_predictor(run_dir: str | Path | None, device: str, space: SearchSpace):
    """The latency predictor for ``device``: the run's own
    (``runs/<name>/predictors/<device>/``), else a shipped one for this space
    (``predictors/<space-name>/<device>/``, same space hash). ``.predict(archs)``
    returns milliseconds."""
    tried = []
    if run_dir is not None:
        d = predictor_dir(run_dir, device)
        if (d / "predictor.json").is_file():
            return load_predictor(d, space, device)
        tried.append(str(d))
    shipped = SHIPPED_PREDICTORS / space.config.name / device
    if (shipped / "predictor.json").is_file():
        return load_predictor(shipped, space, device)
    tried.append(str(shipped))
    raise UserError(f"no latency predictor for device {device!r} (looked in {', '.join(tried)}); run "
                    f"`nasplat profile EXP --device {device}` and `nasplat predictor fit EXP --device {device}`",
                    None, "device")


def load_accuracy_predictor(run_dir: str | Path, space: SearchSpace):
    return load_predictor(Path(run_dir) / "predictors" / "accuracy", space)
