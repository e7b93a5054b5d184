"""The ``nasplat`` command: a thin layer over the stages (and :mod:`nasplat.api`).

Each stage module contributes its subcommands through ``add_commands(subparsers)``;
user errors become one line on stderr and exit 2; an OSError (disk full, permission
denied, a file not found) one line naming the path and the cause, exit 2 for a path the
user got wrong and 1 for the environment; an interrupt exit 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError, os_error_line

COMMAND_MODULES = [
    "nasplat.space.cli",
    "nasplat.supernet.cli",
    "nasplat.train.cli",
    "nasplat.hw.cli",
    "nasplat.predict.cli",
    "nasplat.search.cli",
    "nasplat.export.cli",
    "nasplat.pipeline",
    "nasplat.bench_cli",
]

DESCRIPTION = """\
Neural architecture search with weight-sharing supernets, end to end: write a search
space and an experiment in YAML, train one supernet, measure latency on your devices
with ONNX Runtime, search for the Pareto-best subnets, ship ONNX files."""

EPILOG = """\
the pipeline (each stage resumable; `run` does them all):
  nasplat run EXP                   train -> profile -> predictor fit -> search -> export
  nasplat train EXP                 runs/<name>/supernet/supernet.safetensors
  nasplat profile EXP --device D    runs/<name>/profiles/<D>/measurements.csv
  nasplat predictor fit EXP         runs/<name>/predictors/<D>/
  nasplat search EXP                runs/<name>/search/{trials,pareto}.csv, pareto.png
  nasplat export EXP --pareto       runs/<name>/export/<arch-id>.onnx + manifest.json

examples:
  nasplat space info ofa_mbv3_small
  nasplat run examples/digits_ofa.yaml
  nasplat run examples/digits_ofa.yaml --address auto     (on a Ray cluster)

`nasplat COMMAND --help` describes a command; docs/ in the repository has the rest."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nasplat", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nasplat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "address", None):  # an unreachable cluster fails before any work
            from .ray_address import check_address

            check_address(args.address)
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"nasplat: error: {e.line()}", file=sys.stderr)
        return 2
    except OSError as e:
        line, status = os_error_line(e)
        print(f"nasplat: error: {line}", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        print("nasplat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
