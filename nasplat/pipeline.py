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
import time
from pathlib import Path
from typing import Any

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


def run_pipeline(exp: Any, address: str | None = None) -> dict[str, Any]:
    from .search.outputs import pareto_table
    from .search.stage import read_pareto_archs, run_search
    from .train.run import train_experiment

    run_dir: Path = exp.run_dir
    t_all = time.perf_counter()

    t0 = _stage("train")
    final = run_dir / "supernet" / "supernet.safetensors"
    skipped = final.exists()
    train_experiment(exp, resume=(run_dir / "supernet" / "last.safetensors").exists(), address=address)
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
    result = run_search(exp, resume=True, address=address, print_table=False)
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

    run_pipeline(load_experiment(args.experiment), address=args.address)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole pipeline: train, profile, predictor fit, search, export")
    p.add_argument("experiment")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")
    p.set_defaults(func=_run)
