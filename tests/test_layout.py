"""docs/design.md's layout table matches the library: every module listed, every row a file."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("engine", "models", "data", "utils")


def layout_rows() -> list[str]:
    """The paths in the first column of the table under '## Layout'."""
    text = (REPO / "docs" / "design.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


def library_modules() -> set[str]:
    return {p.relative_to(REPO).as_posix() for d in LIBRARY for p in (REPO / d).rglob("*.py")
            if "__pycache__" not in p.parts}


def test_every_library_module_is_in_the_layout_table():
    missing = library_modules() - set(layout_rows())
    assert not missing, f"add to docs/design.md's layout table: {sorted(missing)}"


def test_every_layout_row_names_an_existing_file():
    rows = layout_rows()
    assert len(rows) == len(set(rows)), "a module is listed twice"
    stale = [r for r in rows if not (REPO / r).is_file()]
    assert not stale, f"docs/design.md lists files that do not exist: {stale}"
