"""``nasplat export EXP [--arch max|min|JSON|@file] [--pareto] [--out DIR]``."""
from __future__ import annotations

import argparse

from ..cli_args import add_experiment, add_weights


def _export(args: argparse.Namespace) -> int:
    from ..experiment import load_experiment
    from .stage import export_archs, export_standalone, parse_arch, pareto_archs

    exp = load_experiment(args.experiment)
    if exp.config.train.strategy == "standalone":
        e = export_standalone(exp, args.out)
        print(f"{e['id']}  acc {e['accuracy'] * 100:.2f}%  params {e['params'] / 1e6:.3f}M  "
              f"-> {(args.out or exp.run_dir / 'export')}/{e['file']}")
        return 0
    if exp.config.train.strategy == "pcdarts":
        from ..errors import UserError

        raise UserError("a pcdarts run yields a genotype, not trained weights: retrain it with "
                        "strategy 'standalone' (see examples/digits_pcdarts_retrain.yaml) and export that",
                        exp.path, "train.strategy")
    if args.pareto:
        archs = pareto_archs(exp)
    else:
        archs = [parse_arch(exp, args.arch) if args.arch else parse_arch(exp, exp.config.export.arch, "export.arch")]
    entries = export_archs(exp, archs, args.out, weights=args.weights, recalibrate=not args.no_recalibrate)
    for e in entries:
        print(f"{e['id']}  acc {e['accuracy'] * 100:.2f}%  MACs {e['macs'] / 1e6:.2f}M  "
              f"params {e['params'] / 1e6:.3f}M  -> {(args.out or exp.run_dir / 'export')}/{e['file']}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export subnets to ONNX with a manifest")
    add_experiment(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--arch", help="max, min, an arch JSON object or @file.json (default: export.arch)")
    g.add_argument("--pareto", action="store_true", help="every subnet of search/pareto.csv")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/<name>/export)")
    add_weights(p)
    p.add_argument("--no-recalibrate", action="store_true",
                   help="keep the checkpoint's BN statistics (default: recalibrate each subnet's BN)")
    p.set_defaults(func=_export)
