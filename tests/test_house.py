"""The house's shape, read from the code's own imports: no import runs back up a floor.

Floors as architecture.md draws them; a room may import its own modules and any lower floor,
never a room beside it or above it. The stages never import Prefect, only the ground floor
speaks SQL, no production package imports the demo, and architecture.md names every module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {
    "core": 1,
    "models": 1,
    "crawler": 2,
    "curation": 2,
    "training": 2,
    "search": 3,
    "flows": 4,
    "reviewlens": 5,
    "demo": 6,
}
STAGES = ("crawler", "curation", "training")
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER)\b")


def _modules(room: str) -> list[Path]:
    return sorted((ROOT / room).rglob("*.py"))


def _imported_rooms(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever in the module the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def arrows() -> set[tuple[str, str]]:
    """(importing room, imported room) for every import between two of the project's rooms."""
    return {
        (room, other)
        for room in FLOORS
        for path in _modules(room)
        for other in _imported_rooms(path)
        if other in FLOORS and other != room
    }


def test_every_arrow_runs_down_a_floor() -> None:
    found = arrows()
    up_or_sideways = sorted((a, b) for a, b in found if FLOORS[b] >= FLOORS[a])
    assert up_or_sideways == []
    # The stages stand on the ground, search on training, the flows on the stages and search, the
    # command on everything, the demo on the command.
    assert {("crawler", "core"), ("curation", "core"), ("curation", "models"), ("training", "models")} <= found
    assert {("search", "training"), ("search", "models"), ("flows", "search"), ("reviewlens", "search")} <= found
    assert {("flows", "crawler"), ("flows", "curation"), ("flows", "training"), ("reviewlens", "flows")} <= found
    assert ("demo", "reviewlens") in found


def test_no_production_package_imports_the_demo() -> None:
    assert sorted(a for a, b in arrows() if b == "demo") == []
    # Nor does anything the package installs as a command other than the demo's own.
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("[")[0]
    assert [line for line in scripts.splitlines() if "demo" in line] == ['reviewlens-demo = "demo.cli:main"']


def _listed(text: str) -> set[str]:
    """Every module architecture.md names under a room's heading, as paths from the root."""
    listed, room = set(), ""
    for line in text.splitlines():
        if heading := re.match(r"^## (\S+/)", line):
            room = heading.group(1)
        elif room and (item := re.match(r"^- `([^`]+\.py)`", line)):
            listed.add(room + item.group(1))
    return listed


def test_architecture_names_every_module() -> None:
    modules = {str(p.relative_to(ROOT)) for room in FLOORS for p in _modules(room) if p.name != "__init__.py"}
    listed = _listed((ROOT / "architecture.md").read_text())
    assert sorted(modules - listed) == [], "modules architecture.md does not name"
    assert sorted(listed - modules) == [], "modules architecture.md names that are gone"


@pytest.mark.parametrize("room", STAGES)
def test_stages_know_nothing_of_prefect(room: str) -> None:
    assert [p.name for p in _modules(room) if "prefect" in _imported_rooms(p)] == []


@pytest.mark.parametrize("room", [r for r in FLOORS if r != "core"])
def test_only_the_ground_floor_speaks_sql(room: str) -> None:
    speaking = []
    for path in _modules(room):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
                speaking.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert speaking == []
