"""``nasplat bench NAME [args...]``: runs ``bench/NAME.py`` from the source checkout."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError


def _bench(args: argparse.Namespace) -> int:
    from .paths import REPO_ROOT

    if not (REPO_ROOT / "bench").is_dir():
        raise UserError("benchmarks live in the source checkout's bench/ folder, not found", REPO_ROOT)
    sys.path.insert(0, str(REPO_ROOT))
    names = sorted(p.stem for p in (REPO_ROOT / "bench").glob("[a-z]*.py"))
    if args.name not in names:
        raise UserError(f"unknown benchmark {args.name!r} (known: {', '.join(names)})", None, "NAME")
    return int(importlib.import_module(f"bench.{args.name}").main(args.args) or 0)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (see bench/)")
    p.add_argument("name")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)
