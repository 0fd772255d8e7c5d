"""The co-localiser finds the product a product's review photos share, on generated photos."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from core.layout import Layout
from core.manifest import open_manifest
from curation.labeling.locations import co_located
from curation.labeling.rule_tasks import machine_prediction
from curation.labeling.shapes import SEVERAL
from curation.preannotate.colocalise import MIN_PHOTOS, CoLocaliser, Location, locate_in
from curation.preannotate.estimates import Thresholds, estimate
from demo.shop.generate import load_truth
from models.coco_detector import Detection
from tests.db import run


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="module")
def located(shop_dir: Path) -> list[tuple[object, Location]]:
    truth = load_truth(shop_dir)
    by_product = defaultdict(list)
    for t in truth.values():
        by_product[t.product_id].append(t)
    localiser = CoLocaliser()
    pairs = []
    for photos in by_product.values():
        found = localiser.locate([shop_dir / "photos" / f"{t.photo_id}.jpg" for t in photos])
        assert found is not None
        pairs.extend(zip(photos, found, strict=True))
    return pairs


def test_the_product_box_matches_the_truth_in_clean_photos(located: list) -> None:
    clean = [(t, loc) for t, loc in located if t.kind == "clean"]
    overlaps = [
        _iou(loc.box, (t.bbox[0] / t.width, t.bbox[1] / t.height, t.bbox[2] / t.width, t.bbox[3] / t.height))
        for t, loc in clean
    ]
    assert len(clean) > 100 and np.mean(np.array(overlaps) >= 0.5) >= 0.8


def test_sure_verdicts_agree_with_the_truth(located: list) -> None:
    verdicts = [(t, estimate([], 0.5, loc)) for t, loc in located]
    sure = [(t, e) for t, e in verdicts if e.verdict != "unsure"]
    agree = [(e.verdict == "pass") == (t.coverage >= 0.5 and t.n_objects == 1) for t, e in sure]
    assert len(sure) >= 0.55 * len(verdicts) and np.mean(agree) >= 0.9
    # Photos with a second product are seldom passed.
    multi = [e.verdict for t, e in verdicts if t.n_objects > 1]
    assert multi and multi.count("pass") <= 0.2 * len(multi)


def test_too_few_photos_are_left_to_the_detector(shop_dir: Path) -> None:
    photos = sorted((shop_dir / "photos").glob("*.jpg"))[: MIN_PHOTOS - 1]
    assert CoLocaliser().locate(photos) is None


def test_the_common_object_wins_whatever_the_component_sign() -> None:
    # Descriptors of a made-up set: an object pattern in a block of cells, random elsewhere.
    rng = np.random.default_rng(0)
    obj = rng.normal(size=16) * 3
    descriptors = rng.normal(size=(12, 12, 12, 16))
    descriptors[:, 2:10, 3:9] += obj
    for loc in locate_in(descriptors):
        assert loc.box == pytest.approx((3 / 12, 2 / 12, 9 / 12, 10 / 12), abs=0.07) and loc.n_objects == 1
    assert all(loc.n_objects == 1 for loc in locate_in(-descriptors + 0.0))


def test_a_second_product_beside_the_product_splits_its_region() -> None:
    # Every photo shows the product in its left half; the last three show another object-like
    # pattern in the right half, which the principal component also finds (both share "object").
    rng = np.random.default_rng(1)
    shared, product, other = (rng.normal(size=16) * 3 for _ in range(3))
    descriptors = rng.normal(size=(12, 12, 12, 16))
    descriptors[:, 3:9, 1:6] += shared + product
    descriptors[9:, 3:9, 6:11] += shared + other
    located = locate_in(descriptors)
    alone, beside = located[:9], located[9:]
    assert all(loc.n_objects == 1 and loc.split < 0.1 for loc in alone)
    assert all(loc.n_objects == 2 and loc.split >= 0.3 for loc in beside)
    # The split leaves the one-product rule to a person, or fails it from a set split.
    assert [estimate([], 0.5, loc).objects_verdict for loc in beside] == ["unsure"] * 3
    assert [estimate([], 0.5, loc, Thresholds(split_fails=0.3)).objects_verdict for loc in beside] == ["fail"] * 3


def test_estimates_from_a_location() -> None:
    big, small = Location((0.05, 0.05, 0.95, 0.95), 1), Location((0.3, 0.3, 0.6, 0.6), 1)
    assert estimate([], 0.5, big).verdict == "pass"
    assert estimate([], 0.5, small).verdict == "fail"
    assert estimate([], 0.5, Location((0.0, 0.0, 0.72, 0.72), 1)).coverage_verdict == "unsure"  # 52%: near the line
    second = Location(big.box, 2, split=0.25)
    assert (estimate([], 0.5, second).objects_verdict, estimate([], 0.5, second).verdict) == ("unsure", "unsure")
    assert estimate([], 0.5, Location(big.box, 2, split=0.5), Thresholds(split_fails=0.4)).verdict == "fail"
    two_chairs = [Detection("chair", 0.9, (0.0, 0.0, 0.5, 1.0)), Detection("chair", 0.8, (0.5, 0.0, 1.0, 1.0))]
    assert estimate(two_chairs, 0.5, big).objects_verdict == "fail"
    # A confident object well below the line around a co-localised box above it: a person looks.
    small_vase = [Detection("vase", 0.9, (0.4, 0.4, 0.6, 0.6))]
    assert estimate(small_vase, 0.5, big).coverage_verdict == "unsure"
    # The hand holding the product is no second product, nor the product's size.
    hand = [Detection("person", 0.95, (0.0, 0.5, 0.3, 1.0)), Detection("vase", 0.9, (0.05, 0.05, 0.9, 0.9))]
    assert estimate(hand, 0.5, big).verdict == "pass"
    assert estimate(hand[:1] * 2, 0.5).coverage is None  # people alone: nothing of the product's size is known


def test_a_location_becomes_the_pre_annotated_box() -> None:
    where = Location((0.1, 0.2, 0.6, 1.0), 2)
    pre = machine_prediction([Detection("vase", 0.7, (0.0, 0.0, 0.1, 0.1))], where, estimate([], 0.5, where))
    boxes = [r["value"] for r in pre["result"] if r["type"] == "rectanglelabels"]
    assert len(boxes) == 1 and (round(boxes[0]["x"]), round(boxes[0]["width"])) == (10, 50)
    assert pre["result"][-1]["value"]["choices"] == [SEVERAL] and "ddt" in pre["model_version"]


class CountingLocaliser(CoLocaliser):
    """The real co-localiser, counting its fits."""

    fits = 0

    def locate(self, paths: Sequence[Path]) -> list[Location] | None:
        self.fits += 1
        return super().locate(paths)


@pytest.mark.both_engines
def test_a_products_location_is_kept_until_its_photos_change(deduped: Layout) -> None:
    localiser = CountingLocaliser()
    with open_manifest(deduped) as m:
        shop, product = run(m, "SELECT shop, product_id FROM usable_photos ORDER BY product_id LIMIT 1").fetchone()
        first = co_located(m, deduped, localiser, shop, product, set())
        assert len(first) >= MIN_PHOTOS and localiser.fits == 1
        # Asked again (a push after one that failed midway): the kept answer, not a second fit.
        assert co_located(m, deduped, localiser, shop, product, set()) == first and localiser.fits == 1
        # A photo fewer (its file damaged): the product is fitted again, over the others.
        gone = sorted(first)[0]
        fewer = co_located(m, deduped, localiser, shop, product, {gone})
        assert localiser.fits == 2 and set(fewer) == set(first) - {gone}
        assert co_located(m, deduped, localiser, shop, product, {gone}) == fewer and localiser.fits == 2
