"""``nasplat bench NAME [args...]``: runs ``bench/NAME.py`` from the source checkout."""
from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys

from .errors import UserError
from .paths import REPO_ROOT

BENCH_DIR = REPO_ROOT / "bench"


def benchmarks() -> dict[str, str]:
    """Benchmark name -> the first sentence of its docstring (read without importing it)."""
    out: dict[str, str] = {}
    for p in sorted(BENCH_DIR.glob("[a-z]*.py")) if BENCH_DIR.is_dir() else []:
        doc = ast.get_docstring(ast.parse(p.read_text())) or ""
        first = " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".")
        first = re.sub(rf"^(Benchmark\s+)?`*{p.stem}`*:\s*", "", first).split(" (")[0]
        out[p.stem] = first if len(first) <= 90 else first[:first.rfind(" ", 0, 88)] + " ..."
    return out


def _bench(args: argparse.Namespace) -> int:
    known = benchmarks()
    if not known:
        raise UserError("benchmarks live in the source checkout's bench/ folder, not found", BENCH_DIR)
    if args.name not in known:
        raise UserError(f"unknown benchmark {args.name!r} (known: {', '.join(known)})", None, "NAME")
    sys.path.insert(0, str(REPO_ROOT))
    return int(importlib.import_module(f"bench.{args.name}").main(args.args) or 0)


def add_commands(sub: argparse._SubParsersAction) -> None:
    listing = "\n".join(f"  {name:18s} {text}" for name, text in benchmarks().items())
    p = sub.add_parser("bench", help="run a benchmark (results: bench/RESULTS.md)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Runs one benchmark of the source checkout's bench/ folder; each takes "
                                   "--quick (minutes on 2 cores) and prints its figures, the machine and the "
                                   "source of its anchor.",
                       epilog=f"benchmarks:\n{listing}\n\n`nasplat bench NAME --help` lists a benchmark's options.")
    p.add_argument("name", metavar="NAME", help="the benchmark (listed below)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its own options, e.g. --quick")
    p.set_defaults(func=_bench)
