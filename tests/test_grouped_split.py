"""A split that cannot leak: photos of one source (a review, an import's group, a duplicate group)
lie wholly in one split, even across products, and the report counts what of test training saw."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import DedupeConfig
from crawler.collection import import_collection
from curation.dedupe.grouping import dedupe
from tests.db import run
from training.data import make_snapshot
from training.evaluate import split_audit
from training.groups import assign_splits, leaks_into_test, source_key, split_groups


def test_photos_joined_through_any_source_form_one_group() -> None:
    groups = split_groups(
        ["a", "b", "c", "d", "e"],
        [("a", "review 1"), ("b", "review 1"), ("b", "duplicates:x"), ("c", "duplicates:x"), ("d", "review 2")],
    )
    assert groups["a"] == groups["b"] == groups["c"] != groups["d"]
    assert len({groups["d"], groups["e"]}) == 2
    # The same photos and links give the same names, in any order.
    assert split_groups(["e", "d", "c", "b", "a"], [("c", "duplicates:x"), ("b", "duplicates:x"), ("a", "review 1"),
                        ("b", "review 1"), ("d", "review 2")]) == groups  # fmt: skip


def test_catalog_photos_of_different_products_are_different_sources() -> None:
    assert source_key("ohouse", "1", "catalog") != source_key("ohouse", "2", "catalog")
    assert source_key("ohouse", "1", "r9") == source_key("ohouse", "2", "r9")


def test_a_group_of_two_products_takes_one_split_and_every_product_fills_every_split() -> None:
    groups = {"lamp": [f"lamp{i}" for i in range(9)] + ["room"], "chair": [f"chair{i}" for i in range(9)] + ["room"]}
    for seed in range(20):
        splits = assign_splits(groups, 0.2, 0.2, seed)
        assert set(splits) == set(groups["lamp"]) | set(groups["chair"])  # "room" once, for both products
        for product in groups:
            got = [splits[g] for g in groups[product]]
            assert (got.count("test"), got.count("val"), got.count("train")) == (2, 2, 6)
    assert assign_splits(groups, 0.2, 0.2, 1) == assign_splits(groups, 0.2, 0.2, 1)
    assert assign_splits(groups, 0.2, 0.2, 1) != assign_splits(groups, 0.2, 0.2, 2)


def test_leaks_count_shared_groups_and_near_duplicates() -> None:
    examples = [
        {"sha256": "t1", "split": "train", "source": "g1"},
        {"sha256": "t2", "split": "train", "source": "g2"},
        {"sha256": "x1", "split": "test", "source": "g1"},  # shares g1 with training
        {"sha256": "x2", "split": "test", "source": "g3"},  # 3 bits from t2: a near duplicate
        {"sha256": "x3", "split": "test", "source": "g4"},
    ]
    far = int("f" * 16, 16)
    hashes = {"t1": (0, 0), "t2": (0xFF00, 0xFF00), "x1": (far, far), "x2": (0xFF07, 0xFF07), "x3": (far, far >> 1)}
    assert leaks_into_test(examples, hashes, 10, 6) == {"test": 3, "sharing_a_group": 1, "near_duplicates": 1}
    assert leaks_into_test(examples, {}, 10, 6)["near_duplicates"] is None


def _crops(folder: Path, name: str, seed: int, n: int) -> list[Path]:
    """`n` crops of one random picture: different enough that dedupe keeps each, one source still."""
    rng = np.random.default_rng(seed)
    picture = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((640, 480))
    out = []
    for i in range(n):
        left, top = 160 * (i % 3), 120 * (i // 3)
        out.append(folder / f"{name}-{i}.jpg")
        picture.crop((left, top, left + 320, top + 240)).resize((160, 120)).save(out[-1])
    return out


def _import(tmp_path: Path, layout: Layout, with_groups: bool) -> dict[str, str]:
    """Three products, each shown in 8 pictures cut into 3 crops, and 2 pictures that show two
    products (a crop of each, as a customer's room shows a lamp and a chair); returns each crop's picture."""
    folder = tmp_path / "crops"
    rows: list[tuple[str, str, str]] = []
    picture_of: dict[str, str] = {}
    folder.mkdir()
    for p, product in enumerate(("lamp", "chair", "sofa")):
        for k in range(8):
            for path in _crops(folder, f"{product}{k}", 100 * p + k, 3):
                rows.append((path.name, product, f"{product}{k}"))
    for k, (a, b) in enumerate((("lamp", "chair"), ("chair", "sofa"))):
        for path, product in zip(_crops(folder, f"room{k}", 999 + k, 4), (a, b, a, b), strict=True):
            rows.append((path.name, product, f"room{k}"))
    with (folder / "list.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "product", "group"] if with_groups else ["path", "product"])
        for name, product, picture in rows:
            w.writerow([name, product, picture] if with_groups else [name, product])
            picture_of[name] = picture
    import_collection(folder / "list.csv", layout)
    dedupe(DedupeConfig(), layout)
    return picture_of


@pytest.mark.parametrize("with_groups", [True, False])
def test_an_imports_groups_split_whole_and_the_report_says_so(tmp_path: Path, with_groups: bool) -> None:
    layout = Layout(tmp_path / "data", database_url=None)
    picture_of = _import(tmp_path, layout, with_groups)
    snapshot = make_snapshot(layout, 0.2, 0.2, seed=0, min_photos=5)
    assert len(snapshot.examples) == 3 * 8 * 3 + 8  # dedupe kept every crop
    with open_manifest(layout) as m:
        sources = run(m, "SELECT sha256, photo_url FROM sources").fetchall()
    file_of = {r["sha256"]: r["photo_url"].rsplit("/", 1)[1] for r in sources}
    by_picture = defaultdict(set)
    for e in snapshot.examples:
        by_picture[picture_of[file_of[e.sha256]]].add(e.split)
    straddling = [p for p, splits in by_picture.items() if len(splits) > 1]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    snapshot.save(run_dir / "snapshot.json")
    text, audit = split_audit(run_dir, layout)
    assert {"train", "val", "test"} == {e.split for e in snapshot.examples}
    if with_groups:
        # A picture's crops, and a room's crops of two products, all lie in one split.
        assert straddling == [] and audit["sharing_a_group"] == 0
        assert "Test photos sharing a group with a training photo: 0" in text and "import's group column" in text
    else:
        # Without the column each file is its own source: crops of one picture straddle the split,
        # which is what the column is for.
        assert straddling
    assert audit["near_duplicates"] == 0 and audit["test"] == len(snapshot.split("test"))
    assert json.loads(json.dumps(audit)) == audit  # report.json holds it as it is
