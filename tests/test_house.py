"""The house's shape, read from the code's own imports: no import runs back up a floor.

Floors as architecture.md draws them; a room may import its own modules and any lower floor,
never a room beside it or above it. The stages never import Prefect, and only the ground floor
speaks SQL.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"core": 1, "models": 1, "crawler": 2, "curation": 2, "training": 2, "flows": 3, "reviewlens": 4}
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
    # The stages stand on the ground, the flows on the stages, the command on everything.
    assert {("crawler", "core"), ("curation", "core"), ("curation", "models"), ("training", "models")} <= found
    assert {("flows", "crawler"), ("flows", "curation"), ("flows", "training"), ("reviewlens", "flows")} <= found


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
