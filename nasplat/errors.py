"""User-facing errors.

Every problem caused by user input (a YAML file, a CLI option, a data folder, a
checkpoint) is raised as :class:`UserError`. The CLI turns it into one line on
stderr and exit status 2, so users never see a traceback for their own typo.
"""
from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error in user input, reported as ``file: field: message``."""

    def __init__(self, message: str, file: str | Path | None = None, field: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        super().__init__(self.line())

    def line(self) -> str:
        # always one line, even for a field named by a YAML key holding a line break
        parts = [" ".join(p.splitlines()) for p in (self.file, self.field) if p]
        text = " ".join(self.message.split())
        return ": ".join(parts + [text])


# errno -> (the cause in words, exit status): 2 for a path the user named wrongly, 1 for
# the environment (disk, permissions, the OS).
_CAUSES: dict[str, tuple[str, int]] = {
    "ENOENT": ("not found", 2), "ENOTDIR": ("a path component is not a folder", 2),
    "EISDIR": ("is a folder, not a file", 2), "ENAMETOOLONG": ("file name too long", 2),
    "ELOOP": ("too many levels of symbolic links", 2), "EEXIST": ("already exists", 2),
    "ENOSPC": ("disk full", 1), "EDQUOT": ("disk quota exceeded", 1), "EFBIG": ("file too large", 1),
    "EACCES": ("permission denied", 1), "EPERM": ("operation not permitted", 1),
    "EROFS": ("read-only file system", 1), "EIO": ("input/output error", 1),
    "EMFILE": ("too many open files", 1), "ENFILE": ("too many open files in the system", 1),
    "ENOMEM": ("out of memory", 1), "EBUSY": ("device or resource busy", 1), "EXDEV": ("cross-device link", 1),
}


def os_error_line(e: OSError) -> tuple[str, int]:
    """One line for an OSError (``PATH: cause (strerror)``) and its exit status: 2 when
    the user named a path that does not exist or is the wrong kind, 1 when the
    environment failed (disk full, permission denied, ...)."""
    import errno

    name = errno.errorcode.get(e.errno or 0, "")
    cause, status = _CAUSES.get(name, (e.strerror or type(e).__name__, 1))
    detail = e.strerror or str(e) or type(e).__name__
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    text = cause if cause.lower() == detail.lower() else f"{cause} ({detail})"
    line = ": ".join([" -> ".join(paths), text] if paths else [text])
    return " ".join(line.split()), status
