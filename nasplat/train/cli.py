"""``nasplat train EXP [--resume] [--force] [--address ADDR]``."""
from __future__ import annotations

import argparse

from ..cli_args import add_address, add_experiment


def _train(args: argparse.Namespace) -> int:
    from ..experiment import load_experiment
    from .run import train_experiment

    exp = load_experiment(args.experiment)
    path = train_experiment(exp, resume=args.resume, force=args.force, address=args.address)
    print(path)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the experiment's supernet")
    add_experiment(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--force", action="store_true", help="discard earlier training and start over")
    add_address(p, "data-parallel training (train.workers > 1)")
    p.set_defaults(func=_train)
