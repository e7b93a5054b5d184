"""Where a search study lives: an Optuna journal file (the default) or an RDB URL.

The default, ``runs/<name>/search/study.journal``, is Optuna's journal format (one
JSON operation per line, what ``JournalFileBackend`` writes and reads, and what
``optuna-dashboard runs/<name>/search/study.journal`` opens). The search keeps the
journal in memory and appends it to the file in batches (:meth:`BufferedJournal.flush`,
once per round and at the end), so an ask or a tell costs no disk write: Optuna's RDB
storage re-reads the whole study on every ask, which grew to 0.37 s per ask at a few
hundred trials. A file is written by one search driver at a time (a flush refuses when
another process appended to it); several drivers on a cluster share an RDB URL
(``postgresql://…``; ``sqlite:///…`` also works), written through directly.

A kill can tear at most the tail of the last batch: on opening, a last line without
its newline is dropped, and trials the journal leaves RUNNING are failed by the search
(their archs are free to be proposed again).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from ..errors import UserError
from ..io import deferred_interrupt

JOURNAL_NAME = "study.journal"


def is_url(spec: str) -> bool:
    """An RDB URL (``dialect://…``) rather than a journal file path."""
    return "://" in spec


class BufferedJournal(BaseJournalBackend):
    """Optuna journal backend: every operation kept in memory, appended to ``path``
    on :meth:`flush` (one lock and one fsync per batch)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._file = JournalFileBackend(str(self.path))
        self._logs: list[dict[str, Any]] = list(self._file.read_logs(0))
        self._pending: list[dict[str, Any]] = []
        self._size = self.path.stat().st_size

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._logs.extend(logs)
        self._pending.extend(logs)

    def flush(self) -> None:
        """Append the operations since the last flush to the file."""
        if not self._pending:
            return
        if self.path.stat().st_size != self._size:
            raise UserError("another process wrote to this study file during the search; one search per "
                            "journal file (use an RDB URL for several drivers)", self.path)
        with deferred_interrupt():  # Ctrl-C in the middle would leave _size behind the file
            self._file.append_logs(self._pending)
            self._pending = []
            self._size = self.path.stat().st_size


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left without its newline by a kill during a write."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.seek(0)
        f.truncate(data.rfind(b"\n") + 1)


class StudyStorage:
    """An opened study storage: ``storage`` for Optuna, :meth:`flush` to persist."""

    def __init__(self, spec: str):
        self.spec = spec
        self.journal = None if is_url(spec) else BufferedJournal(spec)
        self.storage: optuna.storages.BaseStorage | str = (
            spec if self.journal is None else optuna.storages.JournalStorage(self.journal))

    def flush(self) -> None:
        """Write what the buffered journal holds (an RDB storage is written through)."""
        if self.journal is not None:
            self.journal.flush()


def read_storage(spec: str) -> optuna.storages.BaseStorage | str:
    """The storage for reading a study another process may be writing (nothing is
    repaired or buffered; a torn last line is skipped by Optuna's reader)."""
    if is_url(spec):
        return spec
    return optuna.storages.JournalStorage(JournalFileBackend(spec))
