"""Path rules shared by the commands: run folders (``runs/<job>/exp<N>``) and repository-relative defaults."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def resolve_path(path: str) -> Path:
    """A path as given if it exists, else relative to the repository (so defaults work from any folder)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return REPO / p if (REPO / p).exists() else p


def increment_path(path: str | Path, exist_ok: bool = False) -> Path:
    """``runs/train/exp`` if free (or ``exist_ok``), else the next of ``exp2``, ``exp3``, ..."""
    path = Path(path)
    if exist_ok or not path.exists():
        return path
    pattern = re.compile(rf"^{re.escape(path.name)}(\d+)$")
    taken = [int(m.group(1)) for p in path.parent.glob(f"{path.name}*") if (m := pattern.match(p.name))]
    return path.with_name(f"{path.name}{max(taken, default=1) + 1}")
