"""docs/design.md's layout table matches the library: every module listed, every row a file; engine's
sub-packages import one another without cycles, and training loads no command's modules."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

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


def engine_unit_imports() -> dict[str, set[str]]:
    """engine's units (a sub-package, or a module directly under engine/) -> the other units its
    files import, read from the source: local and TYPE_CHECKING-only imports included."""
    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for path in (REPO / "engine").rglob("*.py"):
        importer = unit(".".join(path.relative_to(REPO).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            edges.setdefault(importer, set()).update(
                unit(m) for m in modules if m.startswith("engine.") and unit(m) != importer)
    return edges


def test_engine_units_import_without_cycles():
    edges = engine_unit_imports()
    assert "engine.export" not in edges["engine.detect"] and "engine.detect" not in edges["engine.export"]
    try:
        list(TopologicalSorter(edges).static_order())
    except CycleError as e:
        raise AssertionError(f"engine's sub-packages import each other in a cycle: {e.args[1]}") from None


def module_imports() -> dict[str, set[str]]:
    """Every library module -> the library modules it imports (local and TYPE_CHECKING-only imports
    included; ``from pkg import sub`` counts as importing the submodule, not the package)."""
    paths = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in map(REPO.joinpath, library_modules())}
    edges: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                modules = subs if all(s in paths for s in subs) else [node.module, *subs]
            else:
                continue
            edges[name].update(m for m in modules if m in paths and m != name)
    return edges


def test_no_import_cycle_between_modules():
    try:
        list(TopologicalSorter(module_imports()).static_order())
    except CycleError as e:
        raise AssertionError(f"modules import each other in a cycle: {e.args[1]}") from None


@pytest.mark.parametrize(("module", "unloaded"), [
    ("engine.train.loop", ("engine.detect", "engine.export")),  # training loads no command's modules but val's
    ("engine.formats", ("torch", "onnx", "onnxruntime", "openvino")),  # the format table names its writers lazily
])
def test_importing_loads_only_what_it_needs(module: str, unloaded: tuple[str, ...]):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith({unloaded!r})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
