"""``nasplat export EXP [--arch max|min|JSON|@file | --pareto] [--weights CKPT] [--no-recalibrate]
[--precision fp16 --precision int8] [--check] [--out DIR]``."""
from __future__ import annotations

import argparse

from ..cli_args import add_experiment, add_weights


def _export(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..experiment import load_experiment
    from .stage import check_exports, export_archs, export_standalone, parse_arch, pareto_archs

    exp = load_experiment(args.experiment)
    changes = {}
    if args.precision:
        changes["precisions"] = ["fp32", *args.precision]
    if args.check:
        changes["check"] = True
    if changes:
        exp.config = exp.config.model_copy(update={"export": exp.config.export.model_copy(update=changes)})
    if args.check_only:
        check_exports(exp, args.out)
        return 0
    if exp.config.train.strategy == "standalone":
        entries = [export_standalone(exp, args.out)]
    elif exp.config.train.strategy == "pcdarts":
        raise UserError("a pcdarts run yields a genotype, not trained weights: retrain it with "
                        "strategy 'standalone' (see examples/digits_pcdarts_retrain.yaml) and export that",
                        exp.path, "train.strategy")
    else:
        if args.pareto:
            archs = pareto_archs(exp)
        else:
            archs = [parse_arch(exp, args.arch) if args.arch else
                     parse_arch(exp, exp.config.export.arch, "export.arch")]
        entries = export_archs(exp, archs, args.out, weights=args.weights,
                               recalibrate=False if args.no_recalibrate else None, force=args.force)
    for e in entries:
        files = ", ".join(f"{p} {v['accuracy'] * 100:.2f}%" + (f" {v['latency_ms']:.3f} ms" if v.get("latency_ms")
                                                                else "") for p, v in e["variants"].items())
        print(f"{e['id']}  params {e['params'] / 1e6:.3f}M  {files}  -> {(args.out or exp.run_dir / 'export')}/"
              f"{e['file']}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export subnets to ONNX with a manifest a device team can ship")
    add_experiment(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--arch", help="max, min, an arch JSON object or @file.json (default: export.arch)")
    g.add_argument("--pareto", action="store_true", help="every subnet of search/pareto.csv")
    g.add_argument("--check-only", action="store_true",
                   help="only re-evaluate the files already in the manifest (see --check)")
    add_weights(p)
    p.add_argument("--no-recalibrate", action="store_true",
                   help="keep the checkpoint's BN statistics instead of recalibrating each subnet")
    p.add_argument("--precision", action="append", choices=["fp16", "int8"], default=None,
                   help="also write an fp16 or INT8 file (repeat for both; default: export.precisions)")
    p.add_argument("--check", action="store_true",
                   help="re-evaluate the written ONNX files in ONNX Runtime from the raw val images through the "
                        "manifest's preprocessing and record that accuracy")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/<name>/export)")
    p.add_argument("--force", action="store_true",
                   help="discard the folder's earlier exports (needed when they came from other weights or settings)")
    p.set_defaults(func=_export)
