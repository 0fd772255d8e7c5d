"""The retrain trigger: accepted photos counted since the newest training run."""

from __future__ import annotations

from pathlib import Path

from flows.pipeline import accepted_since_last_training
from reviewlens.manifest import Manifest
from reviewlens.settings import Layout


def _label(m: Manifest, sha: str, decision: str, decided_at: str) -> None:
    with m.transaction() as db:
        db.execute("INSERT INTO photos VALUES (?, 'p', 'JPEG', 1, 1, 1, '')", (sha,))
        db.execute("INSERT INTO labels VALUES (?, 1, 1, '', 1, ?, '', 1.0, 1, ?)", (sha, decision, decided_at))


def test_only_acceptances_after_the_newest_run_count(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with Manifest(layout.manifest_path) as m:
        _label(m, "a", "accept", "2026-03-01T10:00:00+00:00")
        _label(m, "b", "accept", "2026-03-02T10:00:00+00:00")
        _label(m, "c", "reject", "2026-03-02T11:00:00+00:00")
    assert accepted_since_last_training(str(tmp_path)) == 2
    run = layout.runs_dir / "20260301T120000Z-snap-abc"
    run.mkdir(parents=True)
    assert accepted_since_last_training(str(tmp_path)) == 2  # a run without a model never finished
    (run / "model.pt").write_bytes(b"")
    assert accepted_since_last_training(str(tmp_path)) == 1
