"""A photo on a plain backdrop: the product's box from its pixels, and the co-localiser for the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from curation.labeling.rule_tasks import machine_version
from curation.preannotate.colocalise import LOCALISER_VERSION, Location
from curation.preannotate.estimates import estimate
from curation.preannotate.plain_background import PLAIN_VERSION, on_plain_background, prefer_plain

SIZE = (800, 600)


def _product(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], seed: int) -> None:
    """A packaged product: a coloured body with a printed label and stripes, so not one flat colour."""
    rng = np.random.default_rng(seed)
    left, top, right, bottom = box
    draw.rounded_rectangle(box, radius=12, fill=tuple(int(v) for v in rng.integers(30, 200, 3)))
    draw.rectangle((left + 10, (top + bottom) // 2 - 30, right - 10, (top + bottom) // 2 + 30), fill=(250, 250, 240))
    for y in range(top + 15, bottom - 15, 40):
        draw.line((left + 5, y, right - 5, y), fill=tuple(int(v) for v in rng.integers(0, 255, 3)), width=6)


def _on_backdrop(path: Path, boxes: list[tuple[int, int, int, int]], colour: tuple[int, int, int]) -> Path:
    photo = Image.new("RGB", SIZE, colour)
    draw = ImageDraw.Draw(photo)
    for n, box in enumerate(boxes):
        _product(draw, box, n)
    draw.ellipse((700, 520, 720, 540), fill=(90, 60, 40))  # a crumb: neither the product nor a second one
    # A soft shading across the backdrop, as a sheet under a lamp gives, and JPEG's noise.
    shade = np.linspace(-8, 8, SIZE[0])[None, :, None]
    pixels = np.clip(np.asarray(photo).astype(float) + shade, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=85)
    return path


def _fractions(box: tuple[int, int, int, int]) -> tuple[float, ...]:
    return (box[0] / SIZE[0], box[1] / SIZE[1], (box[2] + 1) / SIZE[0], (box[3] + 1) / SIZE[1])


@pytest.mark.parametrize("colour", [(255, 255, 255), (182, 176, 168)])  # a white sheet, a grey table
def test_a_product_on_a_plain_backdrop_gets_its_own_box(tmp_path: Path, colour: tuple[int, int, int]) -> None:
    box = (180, 90, 620, 560)  # 55% of the photo's width, 78% of its height: 43% of the photo
    found = on_plain_background(_on_backdrop(tmp_path / "one.jpg", [box], colour))
    assert found is not None and found.n_objects == 1 and found.by == PLAIN_VERSION
    assert np.allclose(found.box, _fractions(box), atol=0.01)
    assert found.coverage == pytest.approx(0.43, abs=0.015)
    assert estimate([], 0.5, found).coverage_verdict == "fail"  # the rule's line is 50%

    large = (40, 30, 760, 570)  # 86%
    found = on_plain_background(_on_backdrop(tmp_path / "large.jpg", [large], colour))
    assert found is not None and estimate([], 0.5, found).verdict == "pass"


def test_two_products_on_one_backdrop_leave_the_one_product_rule_to_a_person(tmp_path: Path) -> None:
    found = on_plain_background(
        _on_backdrop(tmp_path / "two.jpg", [(30, 40, 380, 560), (420, 40, 770, 560)], (255,) * 3)
    )
    assert found is not None and found.n_objects == 2
    assert np.allclose(found.box, _fractions((30, 40, 770, 560)), atol=0.01)  # both: the box spans them
    assert estimate([], 0.5, found).objects_verdict != "pass"


def test_a_photo_in_a_room_is_left_to_the_co_localiser(tmp_path: Path, shop_dir: Path) -> None:
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)).filter(
        ImageFilter.GaussianBlur(12)
    )  # a blurred real-looking scene: smooth, yet not one colour
    scene.save(tmp_path / "scene.jpg")
    assert on_plain_background(tmp_path / "scene.jpg") is None
    assert on_plain_background(_on_backdrop(tmp_path / "empty.jpg", [], (255,) * 3)) is None  # nothing on it
    photos = sorted((shop_dir / "photos").glob("*.jpg"))[:40]  # the demo shop's rooms
    assert photos and all(on_plain_background(p) is None for p in photos)


def test_the_plain_box_wins_and_the_co_localiser_keeps_the_rest(tmp_path: Path) -> None:
    plain = _on_backdrop(tmp_path / "plain.jpg", [(180, 90, 620, 560)], (255,) * 3)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(
        tmp_path / "room.jpg"
    )
    colocated = [Location((0.4, 0.4, 0.6, 0.6), 1), Location((0.1, 0.1, 0.9, 0.9), 1)]
    found = prefer_plain([plain, tmp_path / "room.jpg"], colocated)
    assert found[0] is not None and found[0].by == PLAIN_VERSION and found[1] == colocated[1]
    assert machine_version(found[0]).endswith(PLAIN_VERSION) and machine_version(found[1]).endswith(LOCALISER_VERSION)
    # Too few photos to co-localise: the plain photo is still measured.
    assert [w is None for w in prefer_plain([plain, tmp_path / "room.jpg"], None)] == [False, True]
