"""Provenance: what each stage's outputs were made from.

Each stage folder holds ``provenance.json``: the stage's *inputs*, by name: the
experiment fields that change its outputs (flattened: ``train.lr``, ``data.batch_size``
...), the space's hash, and the SHA-256 of every upstream artifact it read (the
supernet checkpoint, a device's measurements, a predictor). The record is written when
the stage starts writing outputs made from those inputs, and a stage that finds its
outputs made from other inputs says which, in one line:

====================  ==========================  ==========================================
stage (folder)        inputs                      not inputs (changing them is not a change)
====================  ==========================  ==========================================
train (supernet/)     space, seed, train.*,       train.threads, train.checkpoint_every,
                      data.*, train.init file     data.calib_images, data.loader_workers,
                                                  data.check_images
profile               space, the hardware         profile.samples (more samples extend the
(profiles/<device>/)  profile (protocol as the    same measurements), profile.chunk, seed,
                      experiment sets it)         the supernet's weights (latency does not
                                                  depend on them)
predictor             space, predictor.* (as      -
(predictors/<dev>/)   fitted), the measurements
accuracy predictor    space, seed, predictor.*,   -
(predictors/accuracy) data.*, the supernet (or
                      the CSV it was fitted on)
search (search/)      space, seed, search.*,      search.budget (a larger one continues the
                      the supernet when accuracy  study), search.workers, cpus_per_worker,
                      is measured on it, data.*   gpus_per_worker, max_restarts, storage,
                      then, each predictor used   eval_timeout
export (export/)      space, seed, export.*,      export.check
                      data.*, the checkpoint
====================  ==========================  ==========================================

So ``train --force`` with other settings gives other weights, whose digest makes every
stage that read the old weights stale (the search when it measures accuracy on the
supernet, the accuracy predictor, the export); retraining into bit-identical weights
(same settings, same seed) changes nothing downstream. Profiles never read weights.

``nasplat train/profile/search/export`` refuse stale outputs in one line naming what
changed (``--force`` re-runs the stage); ``--resume`` refuses a change in the same way;
``nasplat run`` re-runs exactly the stale stages and names them.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from .errors import UserError
from .io import file_sha256, write_json

RECORD = "provenance.json"
FORMAT = "nasplat-provenance/1"

# Per section: fields that never change a stage's outputs (execution settings).
NOT_INPUTS = {
    "train": {"threads", "checkpoint_every"},
    "data": {"loader_workers", "check_images"},
    "search": {"budget", "workers", "cpus_per_worker", "gpus_per_worker", "max_restarts", "storage",
               "eval_timeout"},
    "export": {"check", "arch"},
    "profile": {"samples", "chunk"},
}

Inputs = dict[str, Any]


def flatten(obj: Any, prefix: str) -> Inputs:
    """``{"a": {"b": 1}}`` -> ``{"<prefix>.a.b": 1}``; lists and scalars are values."""
    if isinstance(obj, Mapping) and obj:
        out: Inputs = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: obj}


def section(exp: Any, name: str, drop: Iterable[str] = ()) -> Inputs:
    """The experiment's ``name`` section as inputs (resolved: paths absolute), without
    its execution settings (:data:`NOT_INPUTS`) and ``drop``."""
    values = exp.resolved()[name]
    skip = NOT_INPUTS.get(name, set()) | set(drop)
    return flatten({k: v for k, v in values.items() if k not in skip}, name)


def file_digest(path: str | Path) -> str:
    return "sha256:" + file_sha256(path)


def folder_digest(folder: str | Path, volatile: Iterable[str] = ("created",)) -> str:
    """One digest of a folder's files (a fitted predictor): every file but the
    provenance record; JSON files without their ``volatile`` keys (a timestamp must not
    make an identical refit look like a change)."""
    import hashlib

    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and q.name != RECORD):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        data = p.read_bytes()
        if p.suffix == ".json":
            try:
                obj = json.loads(data)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                data = json.dumps({k: v for k, v in obj.items() if k not in set(volatile)}, sort_keys=True).encode()
        h.update(hashlib.sha256(data).digest())
    return "sha256:" + h.hexdigest()


# -- the stages' inputs ---------------------------------------------------------------------
def train_inputs(exp: Any) -> Inputs:
    cfg = exp.config
    out = {"space": exp.space.hash(), "seed": cfg.seed, **section(exp, "train"),
           **section(exp, "data", {"calib_images"})}
    if cfg.train.init:
        out["train.init"] = file_digest(exp.resolve(cfg.train.init))
    return out


def profile_inputs(exp: Any, profile: Any) -> Inputs:
    prof = profile.model_dump(mode="json", exclude={"description"})
    prof["protocol"] = exp.config.profile.protocol_for(profile).model_dump(mode="json")
    return {"space": exp.space.hash(), **flatten(prof, "hardware")}


def latency_predictor_inputs(exp: Any, measurements: Path, **used: Any) -> Inputs:
    """``used``: settings the command line overrode (``latency`` (the kind), ``options``,
    ``statistic``, ``test_fraction``); the others are the experiment's."""
    cfg = exp.config.predictor
    settings = {"latency": cfg.latency, "options": cfg.options, "statistic": cfg.statistic,
                "test_fraction": cfg.test_fraction, "seed": exp.config.seed if cfg.seed is None else cfg.seed}
    settings.update((k, v) for k, v in used.items() if v is not None)
    return {"space": exp.space.hash(), **flatten(settings, "predictor"), "measurements": file_digest(measurements)}


def supernet_accuracy_inputs(exp: Any) -> Inputs:
    """What an arch's accuracy through the supernet depends on (extraction, BN
    recalibration on the calibration images, validation)."""
    from .paths import supernet_checkpoint

    return {"space": exp.space.hash(), "seed": exp.config.seed, **section(exp, "data", {"augment"}),
            "supernet": file_digest(supernet_checkpoint(exp.run_dir))}


def accuracy_predictor_inputs(exp: Any, source: Path, samples: int | None) -> Inputs:
    """``source``: the supernet checkpoint (``samples`` archs measured on it) or the
    CSV of accuracies it was fitted on (``samples`` None)."""
    pred = exp.resolved()["predictor"]
    out = {"space": exp.space.hash(), "seed": exp.config.seed, **flatten(pred["accuracy"], "predictor.accuracy"),
           "predictor.accuracy.samples": samples, "predictor.test_fraction": pred["test_fraction"],
           "predictor.seed": pred["seed"]}
    if samples is None:
        return {**out, "csv": file_digest(source)}
    return {**out, **supernet_accuracy_inputs(exp)}


def search_inputs(exp: Any, artifacts: Mapping[str, Path]) -> Inputs:
    """``artifacts``: name -> the file (checkpoint) or folder (predictor) each metric reads."""
    out = {"space": exp.space.hash(), "seed": exp.config.seed, **section(exp, "search")}
    if "supernet" in artifacts:
        out.update(section(exp, "data", {"augment"}))
    for name, path in sorted(artifacts.items()):
        out[name] = folder_digest(path) if Path(path).is_dir() else file_digest(path)
    return out


def export_inputs(exp: Any, checkpoint: Path | None) -> Inputs:
    out = {"space": exp.space.hash(), "seed": exp.config.seed, **section(exp, "export"),
           **section(exp, "data", {"augment"})}
    if checkpoint is not None:
        out["supernet"] = file_digest(checkpoint)
    return out


# -- records -----------------------------------------------------------------------------------
def read_record(folder: str | Path, name: str = RECORD) -> dict[str, Any] | None:
    path = Path(folder) / name
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None  # unreadable: treated as absent (the stage then records anew)
    return rec if isinstance(rec, dict) and isinstance(rec.get("inputs"), dict) else None


def record(folder: str | Path, stage: str, inputs: Inputs, name: str = RECORD) -> None:
    """Record that ``folder``'s outputs are (being) made from ``inputs``."""
    write_json(Path(folder) / name, {"format": FORMAT, "stage": stage, "inputs": _plain(inputs)})


@contextmanager
def fresh_outputs(folder: str | Path, stage: str, inputs: Inputs, outputs: Callable[[], bool], *,
                  force: bool = False, resume: bool = False, file: Any = None,
                  discard: Callable[[], None] | None = None) -> Iterator[list[str]]:
    """The provenance protocol of one stage run, around the block that makes the outputs:

    1. :func:`check` the folder's record (stale outputs: a one-line error, unless ``force``);
    2. with ``force``, ``discard()`` the old outputs, *then* record the new inputs (a kill
       in between leaves no outputs under a record that does not describe them);
    3. without ``force``, record when there are no outputs yet, or no record (outputs of a
       nasplat from before records: adopted as made from the current inputs);
    4. when the block fails and there are no outputs (or the record was an adoption),
       the record goes, so a command that fails on bad input leaves the folder as it was.

    Yields the names of the inputs that changed (non-empty only with ``force``)."""
    made = outputs()
    names = check(folder, stage, inputs, has_outputs=made, force=force, resume=resume, file=file)
    if force and made and discard is not None:
        discard()
    adopt = made and not force and read_record(folder) is None
    write = force or not made or adopt
    if write:
        record(folder, stage, inputs)
    try:
        yield names
    except BaseException:
        if write and (adopt or not outputs()):
            (Path(folder) / RECORD).unlink(missing_ok=True)
        raise


def _plain(inputs: Inputs) -> Inputs:
    return json.loads(json.dumps(inputs, sort_keys=True, default=str))


def changed(folder: str | Path, inputs: Inputs, name: str = RECORD) -> list[str] | None:
    """The names of the inputs that differ from ``folder``'s record (sorted); None when
    the folder has no record."""
    rec = read_record(folder, name)
    if rec is None:
        return None
    old, new = rec["inputs"], _plain(inputs)
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


_MISSING = "<not set>"


def describe(folder: str | Path, inputs: Inputs, names: list[str], name: str = RECORD, limit: int = 4) -> str:
    """``train.lr 0.05 -> 0.1, supernet sha256:1a2b3c4d5e6f -> sha256:...``"""
    old = (read_record(folder, name) or {"inputs": {}})["inputs"]
    new = _plain(inputs)

    def show(v: Any) -> str:
        if isinstance(v, str) and v.startswith("sha256:"):
            return v[:19]
        text = json.dumps(v) if not isinstance(v, str) else v
        return text if len(text) <= 40 else text[:37] + "..."

    parts = [f"{k} {show(old.get(k, _MISSING))} -> {show(new.get(k, _MISSING))}" for k in names[:limit]]
    if len(names) > limit:
        parts.append(f"and {len(names) - limit} more")
    return ", ".join(parts)


def check(folder: str | Path, stage: str, inputs: Inputs, *, has_outputs: bool, force: bool = False,
          resume: bool = False, file: Any = None) -> list[str]:
    """Compare ``inputs`` with the record of ``folder`` when it holds outputs. Returns
    the changed names ([] when nothing changed, nothing is there, or there is no record);
    raises a one-line :class:`UserError` when something changed and not ``force``:
    the names are the field, so the line reads ``exp.yaml: train.lr: ...``."""
    names = changed(folder, inputs) if has_outputs else None
    if not names or force:
        return names or []
    what = describe(folder, inputs, names)
    if resume:
        msg = (f"changed since {Path(folder)} was written ({what}): cannot resume; restore the old value or "
               f"pass --force to start {stage} over")
    else:
        msg = f"{stage} outputs in {Path(folder)} were made from other inputs ({what}); pass --force to redo {stage}"
    raise UserError(msg, file, ", ".join(names[:4]) + (", ..." if len(names) > 4 else ""))
