"""Where things live: the shipped files (a source checkout or an editable install) and
the layout of a run folder (``runs/<name>/``), named once for every stage."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SPACES = REPO_ROOT / "search_spaces"
SHIPPED_PROFILES = REPO_ROOT / "hw_profiles"
SHIPPED_PREDICTORS = REPO_ROOT / "predictors"


def supernet_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "supernet"


def supernet_checkpoint(run_dir: str | Path) -> Path:
    """The trained supernet's final weights."""
    return supernet_dir(run_dir) / "supernet.safetensors"
