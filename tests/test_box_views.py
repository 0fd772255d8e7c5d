"""The labeling stage's boxes as training data: each decision keeps the person's box, and a box
around one product makes a view of its photo that trains and that search finds the product by."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import queries as q
from core.boxes import area, box_text, parse_box, view_key
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import TrainConfig
from curation.labeling.rules import decide
from demo.shop.annotator import answer
from demo.shop.generate import PhotoTruth, load_truth
from search.indexing import update_index
from tests.db import run
from training.bundle import Ensemble
from training.data import BOX_VIEW_MAX_AREA, load_image, make_snapshot
from training.loading import PhotoRef, Photos
from training.photo_cache import PhotoCache
from training.train import train

SMALL = {"members": ("efficientnet_lite0",), "image_size": 64, "batch_size": 16, "head_epochs": 20}


def test_a_decision_keeps_the_box_around_one_product_only() -> None:
    one = decide([_box(10, 20, 30, 40), _objects("one product")], False, 0.5)
    assert one.decision == "reject" and one.box == pytest.approx((0.1, 0.2, 0.4, 0.6))
    whole = decide([_box(0, 0, 100, 90), _objects("one product")], False, 0.5)
    assert whole.decision == "accept" and whole.box == pytest.approx((0.0, 0.0, 1.0, 0.9))
    # A box drawn past the frame's edge is clipped to it.
    assert decide([_box(-5, 50, 110, 60)], False, 0.5).box == pytest.approx((0.0, 0.5, 1.0, 1.0))
    # Several products: no box is the product's.
    assert decide([_box(0, 0, 50, 50), _objects("several products")], False, 0.5).box is None
    assert decide([_box(0, 0, 50, 50), _box(50, 0, 50, 50)], False, 0.5).box is None
    assert decide([], True, 0.5).box is None


def test_parse_box_refuses_what_is_not_a_box() -> None:
    assert parse_box("0.1000,0.2000,0.5000,0.9000") == (0.1, 0.2, 0.5, 0.9)
    for bad in ("0.5,0.2,0.1,0.9", "0.1,0.2,0.5", "0.1,0.2,0.5,1.5", "a,b,c,d"):
        with pytest.raises(ValueError):
            parse_box(bad)


@pytest.fixture
def boxed(shop_dir: Path, deduped: Layout) -> tuple[Layout, dict[str, PhotoTruth]]:
    """The shop crawled and deduplicated, each kept photo decided by the rules on a careful
    person's answer (the scripted annotator's), recorded as the label pull records it."""
    layout = deduped
    truth = load_truth(shop_dir)
    by_sha = {}
    with open_manifest(layout) as m:
        for r in m.rows(q.USABLE_PHOTOS):
            url = run(m, "SELECT photo_url FROM sources WHERE sha256 = ?", (r["sha256"],)).fetchone()[0]
            by_sha[r["sha256"]] = truth[url.rsplit("/", 1)[1].removesuffix(".jpg")]
        with m.transaction() as db:
            for task_id, (sha, t) in enumerate(by_sha.items()):
                d = decide(answer(t), False, 0.5)
                box = None if d.box is None else box_text(d.box)
                db.run(q.NOTE_LABEL_TASK, sha, 1, task_id, utc_now())
                db.run(
                    q.SAVE_DECISION,
                    task_id,
                    d.decision,
                    d.reason,
                    d.coverage,
                    d.n_objects,
                    utc_now(),
                    box,
                    None,
                    None,
                    sha,
                )
    return layout, by_sha


def test_boxes_train_as_views_cut_from_their_photos(boxed: tuple[Layout, dict[str, PhotoTruth]]) -> None:
    layout, truth = boxed
    with_views = make_snapshot(layout, 0.2, 0.2, seed=0, min_photos=5)
    without = make_snapshot(layout, 0.2, 0.2, seed=0, min_photos=5, with_boxes=False)
    whole = [e for e in with_views.examples if not e.box]
    views = [e for e in with_views.examples if e.box]
    # The whole photos and their splits are the same either way: views only add to training.
    assert whole == without.examples and not any(e.box for e in without.examples)
    assert views and {e.split for e in views} == {"train"}
    split_of = {e.sha256: e.split for e in whole}
    assert all(split_of.get(e.sha256, "train") == "train" for e in views)
    # Each view is a one-product photo's box that leaves out part of the frame, under its product.
    label_of = {c.product_id: i for i, c in enumerate(with_views.classes)}
    for e in views:
        t = truth[e.sha256]
        assert t.n_objects == 1 and area(parse_box(e.box)) <= BOX_VIEW_MAX_AREA
        assert e.label == label_of[str(t.product_id)]
    # Photos refused only because the product is small in them train through their view.
    refused = {e.sha256 for e in views} - set(split_of)
    assert refused and all(truth[s].coverage < 0.5 for s in refused)
    # A photo whose box is nearly the whole frame adds no view.
    assert all(e.sha256 not in {v.sha256 for v in views} for e in whole if truth[e.sha256].coverage > 0.85)

    # A view is the box (with a little margin) cut from the full photo, cached apart from the whole.
    view = max(views, key=lambda e: 1 - area(parse_box(e.box)))
    cache = PhotoCache(layout.cache_dir / "photos", 96)
    ref = PhotoRef(layout.store_dir / view.path, view.sha256, view.box)
    cut = Photos([ref], [0], cache, 96, 96)._open(ref)
    left, top, right, bottom = parse_box(view.box)
    full = load_image(layout.store_dir / view.path)
    expected = ((right - left) * full.width, (bottom - top) * full.height)
    assert cut.width / cut.height == pytest.approx(expected[0] / expected[1], rel=0.15)
    assert cache.path(view.key).exists() and not cache.path(view.sha256).exists()
    assert view.key == view_key(view.sha256, view.box) != view.sha256
    # The view shows the product: the middle of the box and the middle of the cut hold the same colours.
    middle = full.crop(
        (round(left * full.width), round(top * full.height), round(right * full.width), round(bottom * full.height))
    )
    assert np.abs(_middle_colour(middle) - _middle_colour(cut)).max() < 20


def test_views_train_and_are_indexed_beside_their_photos(boxed: tuple[Layout, dict[str, PhotoTruth]]) -> None:
    layout, _ = boxed
    model = train(TrainConfig(mode="quick", **SMALL), layout)  # type: ignore[arg-type]
    record = Ensemble.load(model)
    snapshot = make_snapshot(layout, 0.2, 0.2, seed=0, min_photos=5)
    views = [e for e in snapshot.examples if e.box]
    summary = update_index(layout, record)
    with open_manifest(layout) as m:
        indexable = len(m.rows(q.INDEXABLE_PHOTOS))
    # Every view of a trained product is in the index beside the whole photos.
    assert summary.views >= len(views) and summary.photos == indexable + summary.views
    again = update_index(layout, record)
    assert again.added == 0 and again.views == summary.views
    trained = json.loads((model / "snapshot.json").read_text())["examples"]
    assert sorted(e["box"] for e in trained if e["box"]) == sorted(e.box for e in views)
    # The features of every view were computed once, beside the whole photos'.
    embedded = torch.load(model / "model.pt", weights_only=True)["members"]["efficientnet_lite0"]["history"]
    assert embedded["embedded"] == len(snapshot.examples)
    # Off, training sees the whole photos alone.
    plain = train(TrainConfig(mode="quick", train_on_boxes=False, **SMALL), layout)  # type: ignore[arg-type]
    assert not any(e["box"] for e in json.loads((plain / "snapshot.json").read_text())["examples"])


def _box(x: float, y: float, w: float, h: float) -> dict[str, object]:
    value = {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": ["product"]}
    return {"from_name": "product", "to_name": "image", "type": "rectanglelabels", "value": value}


def _objects(choice: str) -> dict[str, object]:
    return {"from_name": "objects", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}


def _middle_colour(img: Image.Image) -> np.ndarray:
    """The mean colour of the middle fifth of `img` (both ways)."""
    w, h = img.size
    return np.asarray(img.convert("RGB").crop((w * 2 // 5, h * 2 // 5, w * 3 // 5, h * 3 // 5)), np.float64).mean(
        (0, 1)
    )


def test_a_manifest_written_before_boxes_were_kept_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "manifest.sqlite"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE labels (sha256 TEXT PRIMARY KEY, project_id INTEGER NOT NULL, task_id INTEGER NOT NULL, "
            "pushed_at TEXT NOT NULL, annotation_id INTEGER, decision TEXT, reason TEXT, coverage REAL, "
            "n_objects INTEGER, decided_at TEXT)"
        )
        old.execute("INSERT INTO labels VALUES ('a', 1, 1, '', 1, 'accept', '', 0.9, 1, '')")
    with open_manifest(Layout(tmp_path, database_url=None)) as m:  # its file is tmp_path/manifest.sqlite
        assert [tuple(r) for r in run(m, "SELECT sha256, decision, box FROM labels")] == [("a", "accept", None)]
