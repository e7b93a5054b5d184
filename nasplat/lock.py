"""One writer per stage folder: an OS file lock (``fcntl.flock``) on ``<folder>/.lock``.

A second ``nasplat train`` / ``profile`` / ``search`` / ... on the same run folder stops
at once with one line naming the holder's pid (exit 2) and touches nothing; the first
continues unharmed. The OS releases the lock when its holder exits, however it exits
(a kill included), so a lock can never be left stale. While the lock is held nobody
else writes the folder, so temp files found there are abandoned and are removed.

The lock file is removed on release (and a folder the lock created, when it stayed
empty), so a command that fails on bad input leaves the run folder as it found it.
Removing a lock file is safe because a taker re-checks, once it holds the lock, that
the file it locked is still the one at the path.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError
from .io import clean_temps

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        return path.read_text().split()[0]
    except (OSError, IndexError):
        return "unknown"


def _made_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


@contextmanager
def _hold(path: Path, subject: Path, made: list[Path]) -> Iterator[None]:
    """Hold an exclusive flock on the file ``path`` (created, removed on release)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _holder(path)
            for p in made:
                _rmdir_if_empty(p)
            raise UserError(f"in use by another nasplat process (pid {pid}); wait for it to finish or stop it",
                            subject) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        for p in made:
            _rmdir_if_empty(p)


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the write lock of ``folder`` (created when missing) and remove abandoned
    temp files in it; a held lock is a one-line :class:`UserError` naming the holder's
    pid."""
    folder = Path(folder)
    with _hold(folder / LOCK_NAME, folder, _made_folders(folder)):
        clean_temps(folder)
        yield folder


@contextmanager
def path_lock(path: str | Path) -> Iterator[Path]:
    """Hold the write lock of one file (``.<name>.lock`` beside it), e.g. a study journal
    outside the run folder."""
    path = Path(path)
    with _hold(path.with_name(f".{path.name}.lock"), path, _made_folders(path.parent)):
        yield path


def _rmdir_if_empty(p: Path) -> None:
    try:
        p.rmdir()
    except OSError:
        pass


@contextmanager
def stage_lock(run_dir: str | Path, stage: str) -> Iterator[Path]:
    """The write lock of a run's stage folder (``stage``: ``supernet``, ``search``,
    ``profiles/<device>`` ...); also removes abandoned temp files of the run folder's own
    files (``config.yaml``)."""
    run_dir = Path(run_dir)
    with folder_lock(run_dir / stage) as folder:
        clean_temps(run_dir, recursive=False)
        yield folder


def clear_folder(folder: str | Path) -> None:
    """Remove everything in a locked ``folder`` but its lock file (``--force``)."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
