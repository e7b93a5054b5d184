"""``nasplat run EXP [--address A]``: every stage in order — train, profile, predictor
fit, search, export of the Pareto subnets — each skipped when its outputs exist and were
made from the current inputs, each resumable, so re-running after an interruption
continues where it stopped.

A stage whose outputs were made from other inputs (:mod:`nasplat.provenance`: a changed
setting, or an upstream artifact that changed, e.g. retrained weights) is *stale*: it is
run again from scratch and named, ``train: stale (train.lr 0.05 -> 0.1): running it
again``; a stage re-run makes the stages that read its outputs stale in turn.

- train: ``supernet/supernet.safetensors`` (a partial run resumes from ``last``);
- profile: per device in ``hardware:`` (and per ``latency@D`` device that has neither
  its own predictor nor a shipped one measured on a machine like this one), archs
  already in ``measurements.csv`` are skipped;
- predictor fit: per device, and the accuracy predictor when
  ``predictor.accuracy.samples > 0`` or ``search.accuracy: predictor``; fitted when
  missing or stale;
- search: the Optuna study continues (``--resume``) until ``search.budget`` archs;
- export: Pareto subnets whose ONNX file and manifest entry exist are skipped.
The Pareto table (with the ONNX files) is printed at the end.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from . import provenance
from .paths import supernet_checkpoint, supernet_dir
from .ui import say


def _stage(name: str) -> float:
    say(f"== {name}")
    return time.perf_counter()


def _done(name: str, t0: float, skipped: bool = False) -> None:
    say(f"   {name}: {'skipped (outputs exist)' if skipped else 'done'} in {time.perf_counter() - t0:.0f}s")


def _stale(rerun: list[str], stage: str, folder: Path, inputs: dict[str, Any], has_outputs: bool,
           upstream: str | None = None) -> bool:
    """Whether ``stage``'s outputs in ``folder`` must be made again; says why in one line."""
    names = provenance.changed(folder, inputs) if has_outputs else None
    if names:
        why = provenance.describe(folder, inputs, names)
    elif upstream and has_outputs:
        why = f"{upstream} was run again"
    else:
        return False
    say(f"   {stage}: stale ({why}): running it again")
    rerun.append(stage)
    return True


def _fit_needed(rerun: list[str], stage: str, folder: Path, inputs: dict[str, Any], force: bool) -> bool:
    """A predictor is fitted when missing, stale, or without a record (a refit costs
    seconds; trusting an unknown one could cost a search)."""
    if force or not (folder / "predictor.json").exists() or provenance.changed(folder, inputs) is None:
        return True
    return _stale(rerun, stage, folder, inputs, True)


def devices_needed(exp: Any) -> list[str]:
    """Profile names to measure: the ``hardware:`` list, and each ``latency@D`` of the
    search that has no predictor of the run's own and no shipped one that describes this
    machine (says so in one line)."""
    from .hw.stage import experiment_profile
    from .predict._base import latency_predictor_folder, predictor_dir, shipped_mismatch

    names = [experiment_profile(exp, spec).name for spec in exp.config.hardware]
    search = exp.config.search
    metrics = list(search.objectives) + [c.split()[0] for c in search.constraints if c.split()]
    for m in metrics:
        if not m.startswith("latency@") or search.latency != "predictor":
            continue
        prof = experiment_profile(exp, m.split("@", 1)[1])
        if prof.name in names:
            continue
        folder = latency_predictor_folder(exp.run_dir, prof.name, exp.space)
        if folder is None or folder == predictor_dir(exp.run_dir, prof.name):
            continue  # the run's own, or none: the search says what to do
        why = shipped_mismatch(folder, prof.name, prof)
        if why:
            say(f"   {why}: measuring {prof.name} here")
            names.append(prof.name)
    return names


def run_pipeline(exp: Any, address: str | None = None, force: bool = False,
                 storage: str | None = None) -> dict[str, Any]:
    """Run every stage of ``exp``: the missing and the stale ones (named); ``force``
    discards every stage's earlier outputs first, ``storage`` is the search study's
    Optuna storage URL."""
    from .search.outputs import pareto_table
    from .search.stage import build_problem, read_pareto_archs, run_search, search_inputs
    from .train.run import train_experiment

    run_dir: Path = exp.run_dir
    t_all = time.perf_counter()
    rerun: list[str] = []

    t0 = _stage("train")
    final, last = supernet_checkpoint(run_dir), supernet_dir(run_dir) / "last.safetensors"
    redo = force or _stale(rerun, "train", supernet_dir(run_dir), provenance.train_inputs(exp),
                           final.exists() or last.exists())
    skipped = final.exists() and not redo
    train_experiment(exp, resume=last.exists() and not redo, force=redo, address=address)
    _done("train", t0, skipped)

    devices = devices_needed(exp)
    if devices:
        from .hw.stage import experiment_profile, measurements_path, profile_dir, profile_experiment

        t0 = _stage("profile")
        for d in devices:
            prof = experiment_profile(exp, d)
            redo = force or _stale(rerun, f"profile {d}", profile_dir(run_dir, prof.name),
                                   provenance.profile_inputs(exp, prof), measurements_path(run_dir, prof.name).exists())
            profile_experiment(exp, d, address=address, force=redo)
        _done("profile", t0)

    from .predict import predictor_dir

    need_acc = exp.config.predictor.accuracy.samples > 0 or exp.config.search.accuracy == "predictor"
    if devices or need_acc:
        t0 = _stage("predictor fit")
        fitted = 0
        for d in devices:
            from .hw.stage import experiment_profile, measurements_path

            folder = predictor_dir(run_dir, experiment_profile(exp, d).name)
            if _fit_needed(rerun, f"predictor {d}", folder, provenance.latency_predictor_inputs(
                    exp, measurements_path(run_dir, folder.name)), force):
                from .predict import fit_latency

                fit_latency(exp, d, address=address)
                fitted += 1
        folder = run_dir / "predictors" / "accuracy"
        if need_acc and final.exists() and _fit_needed(rerun, "accuracy predictor", folder, provenance.accuracy_predictor_inputs(
                exp, final, exp.config.predictor.accuracy.samples), force):
            from .predict import fit_accuracy

            fit_accuracy(exp)
            fitted += 1
        _done("predictor fit", t0, skipped=not fitted)

    t0 = _stage("search")
    redo = force or _stale(rerun, "search", run_dir / "search", search_inputs(exp, build_problem(exp)), True)
    result = run_search(exp, resume=True, force=redo, address=address, storage=storage, print_table=False)
    _done("search", t0, skipped=result.new_evaluations == 0)

    t0 = _stage("export")
    from .export.stage import export_archs, export_inputs

    archs = read_pareto_archs(exp)
    out_dir = run_dir / "export"
    manifest = out_dir / "manifest.json"
    redo = force or _stale(rerun, "export", out_dir, export_inputs(exp), manifest.exists(),
                           upstream="search" if "search" in rerun else None)
    have: set[str] = set()
    if manifest.exists() and not redo:
        try:
            have = {e["id"] for e in json.loads(manifest.read_text())["subnets"] if (out_dir / e["file"]).exists()}
        except (ValueError, KeyError, TypeError):
            have = set()
    todo = [a for a in archs if a.id not in have]
    values = {r["arch_id"]: {"search": r["values"]} for r in result.records}
    if todo:
        export_archs(exp, todo, out_dir, extra=values, force=redo)
    _done("export", t0, skipped=not todo)

    print(pareto_table(result))
    if rerun:
        print(f"stale stages run again: {', '.join(rerun)}")
    print(f"ONNX files: {out_dir}/<arch_id>.onnx ({len(archs)} Pareto subnets), manifest: {manifest}")
    print(f"plot: {run_dir / 'search' / 'pareto.png'}; total {time.perf_counter() - t_all:.0f}s")
    return {"result": result, "export_dir": out_dir, "archs": archs, "stale": rerun}


def _run(args: argparse.Namespace) -> int:
    from .experiment import load_experiment

    run_pipeline(load_experiment(args.experiment), address=args.address, force=args.force, storage=args.storage)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from .cli_args import add_address, add_experiment

    p = sub.add_parser("run", help="the whole pipeline: train, profile, predictor fit, search, export")
    add_experiment(p)
    add_address(p)
    p.add_argument("--force", action="store_true",
                   help="discard every stage's earlier outputs in the run folder and run them all again")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL for the search study (default: search.storage, else a file in "
                        "runs/<name>/search/)")
    p.set_defaults(func=_run)
