"""Console output: progress bars on long stages (rich on a terminal, a line per
10% otherwise, so CI logs stay short), and plain status lines."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


def say(text: str, enabled: bool = True) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


class _LineBar:
    def __init__(self, name: str, total: int, enabled: bool):
        self.name, self.total, self.enabled = name, max(1, total), enabled
        self.done, self.next_mark, self.t0 = 0, 0.1, time.perf_counter()

    def advance(self, n: int = 1, status: str = "") -> None:
        self.done += n
        if self.enabled and n and self.done / self.total >= self.next_mark - 1e-9:
            while self.next_mark <= self.done / self.total + 1e-9:
                self.next_mark += 0.1
            dt = time.perf_counter() - self.t0
            print(f"  {self.name}: {self.done}/{self.total} ({dt:.0f}s) {status}", file=sys.stderr, flush=True)


class _RichBar:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def advance(self, n: int = 1, status: str = "") -> None:
        self.progress.update(self.task, advance=n, status=status)


@contextmanager
def progress_bar(name: str, total: int, enabled: bool = True) -> Iterator[_LineBar | _RichBar]:
    if not (enabled and sys.stderr.isatty()):
        yield _LineBar(name, total, enabled)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=False) as p:
        yield _RichBar(p, p.add_task(name, total=total, status=""))
