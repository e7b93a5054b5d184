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
