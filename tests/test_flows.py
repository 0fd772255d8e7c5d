"""The flows: typed settings, no Prefect retry of a changed layout, and the retrain trigger."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.exceptions import ParameterTypeError

from core.layout import Layout
from core.manifest import Manifest, open_manifest
from crawler.errors import LayoutChanged
from demo.shop.faults import FaultPlan
from demo.shop.server import DemoShop
from flows.pipeline import crawl_flow
from tests.conftest import crawl_config
from tests.db import run
from tests.shoplog import read_log
from training.runs import accepted_since_last_run


def _label(m: Manifest, sha: str, decision: str, decided_at: str) -> None:
    run(m, "INSERT INTO photos VALUES (?, 'p', 'JPEG', 1, 1, 1, '')", (sha,))
    run(
        m,
        "INSERT INTO labels (sha256, project_id, task_id, pushed_at, annotation_id, decision, reason, coverage, "
        "n_objects, decided_at) VALUES (?, 1, 1, '', 1, ?, '', 1.0, 1, ?)",
        (sha, decision, decided_at),
    )


def test_only_acceptances_after_the_newest_run_count(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with open_manifest(layout, create=True) as m:
        _label(m, "a", "accept", "2026-03-01T10:00:00+00:00")
        _label(m, "b", "accept", "2026-03-02T10:00:00+00:00")
        _label(m, "c", "reject", "2026-03-02T11:00:00+00:00")
    assert accepted_since_last_run(layout) == 2
    run = layout.runs_dir / "20260301T120000Z-snap-abc"
    run.mkdir(parents=True)
    assert accepted_since_last_run(layout) == 2  # a run without a model never finished
    (run / "model.pt").write_bytes(b"")
    assert accepted_since_last_run(layout) == 1


def test_prefect_never_retries_a_changed_layout(shop: DemoShop, layout: Layout, tmp_path: Path) -> None:
    # A redesigned shop fails the same way every time: the crawl task fails on its first run,
    # where a retry would crawl the shop again after its delay.
    shop.faults = FaultPlan({"drift": 1.0})
    with pytest.raises(LayoutChanged, match="field 'products' not found"):
        crawl_flow(str(layout.data_dir), crawl_config(shop, retries=0))
    rankings = [r for r in read_log(tmp_path / "requests.jsonl") if str(r["path"]).startswith("/commerces/ranks")]
    assert len(rankings) == len(shop.crawl_settings()["categories"])


def test_flows_take_typed_settings_and_refuse_unknown_keys(layout: Layout) -> None:
    with pytest.raises(ParameterTypeError, match="top_nn"):
        crawl_flow(str(layout.data_dir), {"top_nn": 3})  # type: ignore[arg-type]
    with pytest.raises(ParameterTypeError, match="top_n"):
        crawl_flow(str(layout.data_dir), {"top_n": "three"})  # type: ignore[arg-type]
