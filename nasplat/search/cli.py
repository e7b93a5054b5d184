"""``nasplat search EXP [--resume] [--force] [--address A] [--storage URL]``."""
from __future__ import annotations

import argparse

from ..cli_args import add_address, add_experiment, add_weights


def _search(args: argparse.Namespace) -> int:
    from ..experiment import load_experiment
    from .stage import run_search

    exp = load_experiment(args.experiment)
    run_search(exp, resume=args.resume, force=args.force, address=args.address, storage=args.storage,
               weights=args.weights)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="multi-objective search over the trained supernet's subnets")
    add_experiment(p)
    p.add_argument("--resume", action="store_true", help="continue the stored study")
    p.add_argument("--force", action="store_true", help="discard the stored study and start over")
    add_address(p, "the evaluator pool")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL for a study shared by several machines, e.g. postgresql://... "
                        "(default: search.storage, else a file in runs/<name>/search/)")
    add_weights(p)
    p.set_defaults(func=_search)
