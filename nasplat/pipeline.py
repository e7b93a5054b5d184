"""``nasplat run EXP [--address A]``: every stage in order — train, profile, predictor
fit, search, export of the Pareto subnets — each skipped when its outputs exist, each
resumable, so re-running after an interruption continues where it stopped.

- train: ``supernet/supernet.safetensors`` (a partial run resumes from ``last``);
- profile: per device in ``hardware:``, archs already in ``measurements.csv`` are skipped;
- predictor fit: per device, skipped when ``predictors/<device>/predictor.json`` exists;
  the accuracy predictor when ``predictor.accuracy.samples > 0`` or ``search.accuracy:
  predictor``, skipped when ``predictors/accuracy/predictor.json`` exists;
- search: the Optuna study continues (``--resume``) until ``search.budget`` archs;
- export: Pareto subnets whose ONNX file and manifest entry exist are skipped.
The Pareto table (with the ONNX files) is printed at the end.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from .paths import supernet_checkpoint
from .ui import say


def _stage(name: str) -> float:
    say(f"== {name}")
    return time.perf_counter()


def _done(name: str, t0: float, skipped: bool = False) -> None:
    say(f"   {name}: {'skipped (outputs exist)' if skipped else 'done'} in {time.perf_counter() - t0:.0f}s")


def devices_needed(exp: Any) -> list[str]:
    """Profile names of the ``hardware:`` list (each is profiled and gets a predictor)."""
    from .hw.stage import experiment_profile

    return [experiment_profile(exp, spec).name for spec in exp.config.hardware]


def run_pipeline(exp: Any, address: str | None = None, force: bool = False,
                 storage: str | None = None) -> dict[str, Any]:
    """Run every stage of ``exp``; ``force`` discards every stage's earlier outputs first,
    ``storage`` is the search study's Optuna storage URL."""
    from .search.outputs import pareto_table
    from .search.stage import read_pareto_archs, run_search
    from .train.run import train_experiment

    run_dir: Path = exp.run_dir
    t_all = time.perf_counter()
    if force:
        for sub in ("profiles", "predictors", "export"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)

    t0 = _stage("train")
    final = supernet_checkpoint(run_dir)
    skipped = final.exists() and not force
    train_experiment(exp, resume=(run_dir / "supernet" / "last.safetensors").exists() and not force, force=force,
                     address=address)
    _done("train", t0, skipped)

    devices = devices_needed(exp)
    if devices:
        from .hw.stage import profile_experiment

        t0 = _stage("profile")
        for d in devices:
            profile_experiment(exp, d, address=address)
        _done("profile", t0)

    from .predict import predictor_dir

    need_acc = exp.config.predictor.accuracy.samples > 0 or exp.config.search.accuracy == "predictor"
    if devices or need_acc:
        t0 = _stage("predictor fit")
        fitted = 0
        for d in devices:
            if not (predictor_dir(run_dir, d) / "predictor.json").exists():
                from .predict import fit_latency

                fit_latency(exp, d, address=address)
                fitted += 1
        if need_acc and not (run_dir / "predictors" / "accuracy" / "predictor.json").exists():
            from .predict import fit_accuracy

            fit_accuracy(exp)
            fitted += 1
        _done("predictor fit", t0, skipped=not fitted)

    t0 = _stage("search")
    result = run_search(exp, resume=True, force=force, address=address, storage=storage, print_table=False)
    _done("search", t0, skipped=result.new_evaluations == 0)

    t0 = _stage("export")
    from .export.stage import export_archs

    archs = read_pareto_archs(exp)
    out_dir = run_dir / "export"
    manifest = out_dir / "manifest.json"
    have: set[str] = set()
    if manifest.exists():
        try:
            have = {e["id"] for e in json.loads(manifest.read_text())["subnets"] if (out_dir / e["file"]).exists()}
        except (ValueError, KeyError, TypeError):
            have = set()
    todo = [a for a in archs if a.id not in have]
    values = {r["arch_id"]: {"search": r["values"]} for r in result.records}
    if todo:
        export_archs(exp, todo, out_dir, extra=values)
    _done("export", t0, skipped=not todo)

    print(pareto_table(result))
    print(f"ONNX files: {out_dir}/<arch_id>.onnx ({len(archs)} Pareto subnets), manifest: {manifest}")
    print(f"plot: {run_dir / 'search' / 'pareto.png'}; total {time.perf_counter() - t_all:.0f}s")
    return {"result": result, "export_dir": out_dir, "archs": archs}


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
