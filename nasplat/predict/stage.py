"""``nasplat predictor fit``: fit a latency predictor on a device's measurements (and
optionally an accuracy predictor on supernet accuracies), report held-out metrics,
save without pickle under ``runs/<name>/predictors/<device>/``."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .. import provenance
from ..errors import UserError
from ..io import append_csv_rows, write_json
from ..lock import folder_lock
from ..paths import supernet_checkpoint
from ..space import Arch, SearchSpace
from ..ui import progress_bar, say
from ._base import predictor_dir, save_predictor
from .metrics import format_metrics, regression_metrics


def split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train / held-out split of ``range(n)``."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction)) if test_fraction > 0 else 0
    n_test = min(n_test, max(0, n - 2))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def fit_and_evaluate(space: SearchSpace, kind: str, archs: Sequence[Arch], y: np.ndarray, test_fraction: float,
                     seed: int, options: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None):
    """Fit ``kind`` on the training split; returns (predictor, train idx, test idx, metrics).
    ``inputs``: what the kind is built on besides measurements (``Predictor.inputs``)."""
    from ._base import make_latency_predictor

    tr, te = split(len(archs), test_fraction, seed)
    pred = make_latency_predictor(kind, space, inputs, options)
    pred.fit([archs[i] for i in tr], y[tr])
    metrics = regression_metrics(y[te], pred.predict([archs[i] for i in te])) if len(te) else {}
    return pred, tr, te, metrics


def fit_latency(exp, device: str, kind: str | None = None, options: dict[str, Any] | None = None,
                test_fraction: float | None = None, address: str | None = None, quiet: bool = False,
                statistic: str | None = None) -> dict:
    """Fit and save the latency predictor of ``device``; returns its held-out metrics."""
    from ..hw.stage import experiment_profile, latency_target, measurements_path, read_measurements

    cfg = exp.config.predictor
    kind = kind or cfg.latency
    options = cfg.options if options is None else options
    tf = cfg.test_fraction if test_fraction is None else test_fraction
    seed = exp.config.seed if cfg.seed is None else cfg.seed
    profile = experiment_profile(exp, device)
    path = measurements_path(exp.run_dir, profile.name)
    rows = read_measurements(path)
    if len(rows) < 4:
        raise UserError(f"{len(rows)} measurements; at least 4 are needed (run `nasplat profile` first)", path)
    archs = [exp.space.arch(json.loads(r["arch"]), str(path)) for r in rows]
    stat = cfg.statistic if statistic is None else statistic
    y = latency_target(rows, stat)
    from ._base import predictor_class

    inputs = predictor_class(kind, str(exp.path), "predictor.latency").inputs(exp, profile, stat, address, quiet,
                                                                              dict(options))
    pred, tr, te, metrics = fit_and_evaluate(exp.space, kind, archs, y, tf, seed, options, inputs)
    out = predictor_dir(exp.run_dir, profile.name)
    with _saving(out, "predictor", provenance.latency_predictor_inputs(exp, path, latency=kind, options=options,
                                                                        statistic=stat, test_fraction=tf)):
        save_predictor(out, pred, [archs[i] for i in tr], y[tr], target="latency_ms",
                       extra={"device": profile.name, "metrics": metrics, "n_test": int(len(te)),
                              "measurements": str(path), "statistic": stat})
    if len(te):
        p = pred.predict([archs[i] for i in te])
        (out / "test.csv").unlink(missing_ok=True)
        append_csv_rows(out / "test.csv", [{"arch_id": archs[i].id, "measured_ms": y[i], "predicted_ms": v}
                                           for i, v in zip(te, p)], ["arch_id", "measured_ms", "predicted_ms"])
        write_json(out / "metrics.json", metrics)
        say(f"{profile.name} {kind}: held-out {format_metrics(metrics)}", not quiet)
    say(f"saved {kind} latency predictor ({len(tr)} archs) -> {out}", not quiet)
    return metrics


@contextmanager
def _saving(folder: Path, stage: str, inputs: dict[str, Any]) -> Iterator[None]:
    """Write a predictor folder under its lock, then record what it was fitted on (the
    old record goes first: a kill in between leaves none, never a wrong one)."""
    with folder_lock(folder):
        (folder / provenance.RECORD).unlink(missing_ok=True)
        yield
        provenance.record(folder, stage, inputs)


def _check_cache(exp, out: Path, quiet: bool) -> None:
    """The cached supernet accuracies (``measurements.csv``) hold for the weights, space
    and data they were measured with (``cache.json``); with others they are measured again."""
    if not supernet_checkpoint(exp.run_dir).exists():
        return  # measuring says so
    cache, inputs = out / "measurements.csv", provenance.supernet_accuracy_inputs(exp)
    names = provenance.changed(out, inputs, CACHE_RECORD)
    if cache.exists() and names:
        say(f"accuracy predictor: {provenance.describe(out, inputs, names, CACHE_RECORD)} since the cached supernet "
            f"accuracies were measured: measuring them again", not quiet)
        cache.unlink()
    if names != []:  # new, changed, or a cache from before records (adopted)
        provenance.record(out, "supernet accuracies", inputs, CACHE_RECORD)


CACHE_RECORD = "cache.json"


def fit_accuracy(exp, samples: int | None = None, from_csv: str | Path | None = None,
                 quiet: bool = False) -> dict:
    """Fit the accuracy predictor on (arch, accuracy) pairs: read from ``from_csv``
    (columns ``arch`` JSON and ``accuracy``), or evaluate ``samples`` archs stratified
    over MACs through the trained supernet (extract + BN recalibration + validation),
    cached in ``predictors/accuracy/measurements.csv``."""
    from ..hw.stage import stratified_archs
    from .accuracy import AccuracyPredictor

    cfg = exp.config.predictor
    out = Path(exp.run_dir) / "predictors" / "accuracy"
    if from_csv is not None:
        from ._base import read_training_csv

        archs, y = read_training_csv(Path(from_csv), exp.space, "accuracy")
    else:
        n = samples or cfg.accuracy.samples
        if n < 4:
            raise UserError("need at least 4 archs (predictor.accuracy.samples or --samples)", exp.path,
                            "predictor.accuracy.samples")
        with folder_lock(out):
            _check_cache(exp, out, quiet)
            archs, y = _supernet_accuracies(exp, stratified_archs(exp.space, n, exp.config.seed + 1),
                                            out / "measurements.csv", quiet)
    seed = exp.config.seed if cfg.seed is None else cfg.seed
    tr, te = split(len(archs), cfg.test_fraction, seed)
    pred = AccuracyPredictor(exp.space, **cfg.accuracy.options).fit([archs[i] for i in tr], y[tr])
    metrics = regression_metrics(y[te], pred.predict([archs[i] for i in te])) if len(te) else {}
    with _saving(out, "accuracy predictor", provenance.accuracy_predictor_inputs(
            exp, Path(from_csv) if from_csv is not None else supernet_checkpoint(exp.run_dir),
            None if from_csv is not None else n)):
        save_predictor(out, pred, [archs[i] for i in tr], y[tr], target="accuracy",
                       extra={"metrics": metrics, "n_test": int(len(te))})
    if metrics:
        say(f"accuracy predictor: held-out {format_metrics(metrics)}", not quiet)
    return metrics


def _supernet_accuracies(exp, archs: list[Arch], cache: Path, quiet: bool) -> tuple[list[Arch], np.ndarray]:
    import csv

    from ..data import load_experiment_data
    from ..supernet import build_supernet
    from ..supernet.evaluate import evaluate_arch

    final = supernet_checkpoint(exp.run_dir)
    if not final.exists():
        raise UserError("the accuracy predictor needs a trained supernet; train one first (nasplat's `train` command)", final)
    done: dict[str, float] = {}
    if cache.is_file():
        with open(cache, newline="") as f:
            done = {r["arch_id"]: float(r["accuracy"]) for r in csv.DictReader(f)}
    todo = [a for a in archs if a.id not in done]
    if todo:
        net = build_supernet(exp.space, checkpoint=final)
        data = load_experiment_data(exp)
        with progress_bar("accuracy", len(todo), not quiet) as bar:
            for a in todo:
                acc, _ = evaluate_arch(net, a, data, exp.config.data.calib_images)
                append_csv_rows(cache, [{"arch_id": a.id, "arch": a.to_json(), "accuracy": acc}],
                                ["arch_id", "arch", "accuracy"])
                done[a.id] = acc
                bar.advance(1, f"{acc:.3f}")
    return archs, np.array([done[a.id] for a in archs])
