"""The ``nasplat`` command. Each stage module contributes its subcommands through
``add_commands(subparsers)``; user errors become one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

COMMAND_MODULES = [
    "nasplat.space.cli",
    "nasplat.train.cli",
    "nasplat.export.cli",
    "nasplat.hw.cli",
    "nasplat.predict.cli",
    "nasplat.search.cli",
    "nasplat.pipeline",
    "nasplat.bench_cli",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nasplat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that stage has no commands yet
                continue
            raise
        mod.add_commands(sub)
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
    except KeyboardInterrupt:
        print("nasplat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
