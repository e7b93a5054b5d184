"""CLI conventions: a user-facing --help, --version, help text on every argument."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from nasplat import __version__
from nasplat.bench_cli import benchmarks
from nasplat.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser, path: str = "nasplat"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, f"{path} {name}")


def test_every_argument_has_help():
    missing = []
    for path, p in _subparsers(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            if not a.help:
                missing.append(f"{path}: {a.dest}")
    assert not missing, "arguments without help: " + ", ".join(missing)


def test_version_and_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"nasplat {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Each stage module contributes" not in out  # not the module's internal docstring
    for command in ("run", "train", "profile", "search", "export", "bench"):
        assert f"\n    {command}" in out


def test_bench_help_lists_every_benchmark(capsys):
    names = benchmarks()
    assert {"overhead", "ranking", "search_efficiency", "export"} <= set(names)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    for name, text in names.items():
        assert f"  {name} " in out and text[:20] in out


def test_version_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "nasplat.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"nasplat {__version__}"
