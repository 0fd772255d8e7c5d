"""Leakage-free splits: no two photos within the near-duplicate threshold sit in different splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.layout import Layout
from core.manifest import Manifest, utc_now
from core.settings import DedupeConfig
from crawler.crawl import crawl
from curation.dedupe.grouping import dedupe
from curation.dedupe.neardup import near_pairs
from reviewlens.demoshop.server import DemoShop
from tests.conftest import crawl_config
from training.data import make_snapshot


def test_no_pair_within_the_threshold_crosses_splits(shop: DemoShop, shop_dir: Path, layout: Layout) -> None:
    crawl(crawl_config(shop), layout)
    config = DedupeConfig()
    dedupe(config, layout)
    with Manifest(layout.manifest_path) as m:
        with m.conn:  # every kept photo accepted, as if annotators said so
            m.conn.execute(
                "INSERT INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
                "SELECT sha256, 1, rowid, ?, 'accept', ? FROM curation WHERE is_kept = 1",
                (utc_now(), utc_now()),
            )
        rows = m.conn.execute(
            "SELECT sha256, phash, centre_hash, group_id FROM curation WHERE status = 'ok'"
        ).fetchall()
    snapshot = make_snapshot(layout, val_share=0.2, test_share=0.2, seed=0, min_photos=5)
    split_of_group = {e.group_id: e.split for e in snapshot.examples}
    assert {"train", "val", "test"} == set(split_of_group.values())
    # Every photo, kept or not, takes its group's split: the re-posts left out would land there.
    split = [split_of_group.get(r["group_id"]) for r in rows]
    full = np.array([int(r["phash"], 16) for r in rows], dtype=np.uint64)
    centre = np.array([int(r["centre_hash"], 16) for r in rows], dtype=np.uint64)
    pairs = near_pairs(full, centre, config.max_distance, config.max_cross_distance)
    assert pairs, "the shop has re-posts: some pairs must be near"
    crossing = [(i, j) for i, j in pairs if split[i] and split[j] and split[i] != split[j]]
    assert crossing == []
    # Within the snapshot itself no two photos are near at all: one photo per group trains.
    kept = {e.sha256 for e in snapshot.examples}
    assert not [(i, j) for i, j in pairs if rows[i]["sha256"] in kept and rows[j]["sha256"] in kept]
