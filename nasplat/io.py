"""File writes a later stage can trust.

- Whole files are written atomically: a temp file in the same folder
  (``.<name>.<pid>.<random>.tmp``), fsynced, then renamed onto the target. A failed
  write (disk full, permission denied) leaves the previous file as it was and removes
  its temp file; a temp file left by a kill names its writer's pid, so the next run
  removes it once that process is gone (:func:`clean_temps`).
- Logs (per-row CSVs) are appended to, not rewritten: a row costs its own bytes, not the
  whole file's. A kill can tear only the last row, which the next append (and every
  reader that goes through :func:`append_csv_rows`) cuts off; a failed append is undone.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

def _read_umask() -> int:
    mask = os.umask(0o022)  # read once, at import (setting it is the only portable way to read it)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
_TEMP = re.compile(r"^\..+\.tmp$")
_TEMP_PID = re.compile(r"^\..+?\.(\d+)\.[^.]+\.tmp$")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the same folder; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make every artifact private
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:  # name the file being written, not its temp file
        if e.filename in (None, str(tmp_path)):
            e.filename, e.filename2 = str(path), None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends, then raise it: for a write that
    must not stop halfway (its bookkeeping would disagree with the file). A no-op
    outside the main thread, where signals are not delivered."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught and callable(old):
            old(*caught[0])
        elif caught:
            raise KeyboardInterrupt


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_temps(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Remove temp files (``.<name>.<pid>.<random>.tmp``) under ``folder`` whose writer is
    no longer running (a temp file without a pid, from an older nasplat, counts as
    abandoned); returns what was removed. A live writer's temp file is left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        if not (p.is_file() and _TEMP.match(p.name)):
            continue
        m = _TEMP_PID.match(p.name)
        if m and int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1))):
            continue
        if m and int(m.group(1)) == os.getpid():
            continue  # this process's own write in progress
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _cut_torn_tail(fd: int) -> int:
    """Truncate a file after its last newline (a row torn by a kill); returns its size."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    pos, step = size, 1 << 16
    while pos > 0:
        start = max(0, pos - step)
        nl = os.pread(fd, pos - start, start).rfind(b"\n")
        if nl >= 0:
            os.ftruncate(fd, start + nl + 1)
            return start + nl + 1
        pos = start
    os.ftruncate(fd, 0)
    return 0


def append_csv_rows(path: str | Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Append ``rows`` to a CSV (the header first when the file is new or empty) with one
    fsync. A row torn by an earlier kill is cut off first; a failed write (disk full)
    truncates the file back to what it was."""
    import csv
    import io as _io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = _cut_torn_tail(fd)
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        if size == 0:
            writer.writeheader()
        writer.writerows(rows)
        data = memoryview(buf.getvalue().encode("utf-8"))
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as e:
            os.ftruncate(fd, size)
            if e.filename is None:
                e.filename = str(path)
            raise
    finally:
        os.close(fd)
