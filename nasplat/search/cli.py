"""``nasplat search EXP [--resume] [--force] [--address A] [--storage URL]``."""
from __future__ import annotations

import argparse


def _search(args: argparse.Namespace) -> int:
    from ..experiment import load_experiment
    from .stage import run_search

    exp = load_experiment(args.experiment)
    run_search(exp, resume=args.resume, force=args.force, address=args.address, storage=args.storage)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="multi-objective search over the trained supernet's subnets")
    p.add_argument("experiment")
    p.add_argument("--resume", action="store_true", help="continue the stored study")
    p.add_argument("--force", action="store_true", help="discard the stored study and start over")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")
    p.add_argument("--storage", default=None,
                   help="Optuna RDB URL (default: sqlite:///runs/<name>/search/study.db)")
    p.set_defaults(func=_search)
