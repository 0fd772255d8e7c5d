"""Run folders: how they are named, the newest finished one, the model that serves, and the labels
that came after the newest.

A run folder is `<UTC start time>-<snapshot id>`. It is built under a hidden temporary name and
renamed once complete, so a folder with a plain name always holds a whole run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core import queries as q
from core.errors import ReviewlensError
from core.layout import Layout
from core.manifest import open_manifest

STAMP = "%Y%m%dT%H%M%SZ"


class NoTrainedModel(ReviewlensError):
    """No finished run to evaluate or predict with."""


PARTIAL = ".partial-"


@contextmanager
def building_run(layout: Layout, snapshot_id: str) -> Iterator[tuple[Path, Path]]:
    """(folder to write in, the run's own folder) for a run starting now.

    The first is renamed to the second when the block ends well and removed when it fails;
    what a killed run left is removed by the next one.
    """
    _sweep_partial_runs(layout)
    final = layout.runs_dir / f"{datetime.now(UTC):{STAMP}}-{snapshot_id}"
    partial = layout.runs_dir / f"{PARTIAL}{os.getpid()}-{final.name}"
    partial.mkdir(parents=True)
    try:
        yield partial, final
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(final)


def _sweep_partial_runs(layout: Layout) -> None:
    """Removes the partial runs of processes that are gone; a live one may still be training."""
    for partial in layout.runs_dir.glob(f"{PARTIAL}*"):
        pid = int(partial.name.removeprefix(PARTIAL).split("-")[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def finished_runs(layout: Layout) -> list[Path]:
    """Run folders holding a model, oldest first."""
    return sorted(p.parent for p in layout.runs_dir.glob("*/model.pt") if not p.parent.name.startswith(PARTIAL))


def latest_run(layout: Layout) -> Path:
    """The newest finished run folder."""
    runs = finished_runs(layout)
    if not runs:
        raise NoTrainedModel(f"no trained run under {layout.runs_dir}: run `reviewlens train` first")
    return runs[-1]


def serving_model(layout: Layout) -> Path | None:
    """The model every answer comes from, the same for `predict`, `serve`, the index stage and the
    ML backend: production's, else the newest finished run's (a shop that trained but promoted
    nothing yet), else None: the members' pretrained bodies and their index answer."""
    if (layout.production_dir / "model.pt").exists():
        return layout.production_dir
    runs = finished_runs(layout)
    return runs[-1] if runs else None


def started_at(run_dir: Path) -> datetime:
    """When the run started, read from its folder's name."""
    return datetime.strptime(run_dir.name.split("-")[0], STAMP).replace(tzinfo=UTC)


def accepted_since_last_run(layout: Layout) -> int:
    """Photos accepted after the newest finished run started: the labels a retrain would add."""
    runs = finished_runs(layout)
    since = started_at(runs[-1]).isoformat(timespec="seconds") if runs else ""
    with open_manifest(layout) as manifest:
        return manifest.scalar(q.ACCEPTED_SINCE, since)


def newest_run_name(layout: Layout) -> str:
    """The newest finished run's folder name, or "none" before the first training."""
    runs = finished_runs(layout)
    return runs[-1].name if runs else "none"
