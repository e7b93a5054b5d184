"""Where the shipped files live (a source checkout or an editable install)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SPACES = REPO_ROOT / "search_spaces"
SHIPPED_PROFILES = REPO_ROOT / "hw_profiles"
