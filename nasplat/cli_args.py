"""Arguments that several ``nasplat`` subcommands share, written once with their help."""
from __future__ import annotations

import argparse

EXPERIMENT_HELP = "the experiment YAML file (e.g. examples/digits_ofa.yaml)"


def add_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", metavar="EXPERIMENT", help=EXPERIMENT_HELP)


def add_address(p: argparse.ArgumentParser, what: str = "training and search") -> None:
    p.add_argument("--address", default=None, metavar="ADDR",
                   help=f"Ray cluster for {what}: auto, HOST:PORT or ray://HOST:10001 "
                        "(default: a local Ray instance)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, metavar="CKPT",
                   help="supernet weights to use instead of the run's trained ones: a nasplat checkpoint of "
                        "the space or an official OFA checkpoint (see `nasplat convert`)")
