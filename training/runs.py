"""Run folders: how they are named, the newest finished one, and the labels that came after it.

A run folder is `<UTC start time>-<snapshot id>`; it is finished once its model.pt exists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from core import queries as q
from core.errors import ReviewlensError
from core.layout import Layout
from core.manifest import Manifest

STAMP = "%Y%m%dT%H%M%SZ"


class NoTrainedModel(ReviewlensError):
    """No finished run to evaluate or predict with."""


def new_run_dir(layout: Layout, snapshot_id: str) -> Path:
    """Creates and returns the folder of a run starting now."""
    run_dir = layout.runs_dir / f"{datetime.now(UTC):{STAMP}}-{snapshot_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def finished_runs(layout: Layout) -> list[Path]:
    """Run folders holding a model, oldest first."""
    return sorted(p.parent for p in layout.runs_dir.glob("*/model.pt"))


def latest_run(layout: Layout) -> Path:
    """The newest finished run folder."""
    runs = finished_runs(layout)
    if not runs:
        raise NoTrainedModel(f"no trained run under {layout.runs_dir}: run `reviewlens train` first")
    return runs[-1]


def started_at(run_dir: Path) -> datetime:
    """When the run started, read from its folder's name."""
    return datetime.strptime(run_dir.name.split("-")[0], STAMP).replace(tzinfo=UTC)


def accepted_since_last_run(layout: Layout) -> int:
    """Photos accepted after the newest finished run started: the labels a retrain would add."""
    runs = finished_runs(layout)
    since = started_at(runs[-1]).isoformat(timespec="seconds") if runs else ""
    with Manifest(layout.manifest_path) as manifest:
        return manifest.scalar(q.ACCEPTED_SINCE, since)
