"""Leakage-free splits: no two photos within the near-duplicate threshold sit in different splits."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import DedupeConfig, TrainConfig
from crawler.crawl import crawl
from curation.dedupe.neardup import near_pairs
from demo.shop.server import DemoShop
from tests.conftest import crawl_config
from tests.db import run
from training.data import make_snapshot
from training.members import MissingWeights
from training.train import train

# The subject is the split and training, not the manifest's queries: SQLite alone (the snapshot's
# queries run on both engines in test_manifest.py).


@pytest.fixture
def accepted(deduped: Layout) -> Layout:
    """The shop crawled and deduplicated, every kept photo accepted as if annotators said so."""
    layout = deduped
    with open_manifest(layout) as m:
        run(
            m,
            "INSERT INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
            "SELECT sha256, 1, ROW_NUMBER() OVER (ORDER BY sha256), ?, 'accept', ? FROM curation WHERE is_kept = 1",
            (utc_now(), utc_now()),
        )
    return layout


def test_no_pair_within_the_threshold_crosses_splits(accepted: Layout) -> None:
    layout, config = accepted, DedupeConfig()
    with open_manifest(layout) as m:
        rows = run(m, "SELECT sha256, phash, centre_hash, group_id FROM curation WHERE status = 'ok'").fetchall()
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


def test_a_failed_train_leaves_no_run_folder(accepted: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The second member's weights cannot be had (no file, no network): training fails after
    # the first member trained, and no half-written run is left for evaluate or predict to pick.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    config = TrainConfig(members=("efficientnet_lite0", "resnet50"), image_size=64)
    with pytest.raises(MissingWeights):
        train(config, accepted)
    assert list(accepted.runs_dir.iterdir()) == []
    run_dir = train(TrainConfig(members=("efficientnet_lite0",), image_size=64), accepted)
    assert sorted(p.name for p in accepted.runs_dir.iterdir()) == [run_dir.name]
    assert {p.name for p in run_dir.iterdir()} == {"model.pt", "snapshot.json"}


def test_a_missing_or_changed_photo_is_left_out_and_the_next_crawl_fetches_it(shop: DemoShop, accepted: Layout) -> None:
    layout = accepted
    first = make_snapshot(layout, val_share=0.2, test_share=0.2, seed=0, min_photos=5)
    missing, changed, crafted = first.examples[0], first.examples[1], first.examples[2]
    (layout.store_dir / missing.path).unlink()
    (layout.store_dir / changed.path).write_bytes((layout.store_dir / first.examples[-1].path).read_bytes())
    with open_manifest(layout) as m:
        run(m, "UPDATE photos SET path = '../../../etc/hostname' WHERE sha256 = ?", (crafted.sha256,))

    second = make_snapshot(layout, val_share=0.2, test_share=0.2, seed=0, min_photos=5)
    left_out = {e.sha256 for e in first.examples} - {e.sha256 for e in second.examples}
    assert left_out == {missing.sha256, changed.sha256, crafted.sha256}
    with open_manifest(layout) as m:
        reasons = {r["reason"] for r in run(m, "SELECT reason FROM failures")}
    assert reasons == {"missing from the store", "bytes in the store do not match their hash"}

    crawl(crawl_config(shop), layout)
    for example in (missing, changed):
        data = (layout.store_dir / example.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == example.sha256
    third = make_snapshot(layout, val_share=0.2, test_share=0.2, seed=0, min_photos=5)
    assert {e.sha256 for e in first.examples} - {e.sha256 for e in third.examples} == {crafted.sha256}


def test_a_killed_train_leaves_no_run_and_keeps_its_features(accepted: Layout) -> None:
    args = [sys.executable, "-m", "reviewlens.cli", "train", "--data-dir", str(accepted.data_dir)]
    flags = ["--mode", "full", "--members", "efficientnet_lite0", "--epochs", "50", "--patience", "50"]
    proc = subprocess.Popen([*args, *flags, "--image-size", "64"], stderr=subprocess.PIPE, text=True)
    # Killed once fine-tuning runs: the features were computed and kept before it started.
    assert proc.stderr is not None
    for line in proc.stderr:
        if "fine-tuning from the probe" in line:
            break
    time.sleep(1)
    proc.kill()
    proc.wait()
    assert [p.name.startswith(".partial-") for p in accepted.runs_dir.iterdir()] == [True], "not killed mid-run"
    run_dir = train(TrainConfig(mode="quick", members=("efficientnet_lite0",), image_size=64), accepted)
    assert [p.name for p in accepted.runs_dir.iterdir()] == [run_dir.name]
    history = torch.load(run_dir / "model.pt", weights_only=True)["members"]["efficientnet_lite0"]["history"]
    assert history["embedded"] == 0  # every feature came from the killed run's cache
