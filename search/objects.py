"""Where the products in a photo may be: boxes to search, and which of them to keep.

The COCO detector proposes the things it knows (bottles, cups, chairs, ...), but a shop sells
many it does not. So the photo itself and a fixed multi-scale grid of regions are proposed
too, the regions of R-MAC (Tolias et al., "Particular object retrieval with integral max-pooling
of CNN activations", ICLR 2016): squares of side 2·min(w, h)/(l + 1) at scales l = 1..3, spread
evenly with about 40% overlap. Every proposal is searched; a proposal is kept when its score (the
search's: how sure its likeliest products are) is sure enough, best first, unless it is a kept box
again or shows the product of a kept box it overlaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.boxes import WHOLE, Box, area
from models.coco_detector import Detector

SCALES = (1, 2, 3)
OVERLAP = 0.4
DETECTOR_SCORE = 0.3
NOT_PRODUCTS = {"person", "dining table", "bed", "couch", "tv"}  # the scene rather than a product in it
# Intersection over union from which two boxes are one object: above a half, so that each half
# of a photo of two products may stand beside the whole.
SAME_BOX = 0.6
SAME_PRODUCT_OVERLAP = 0.1  # a box showing a kept box's product and overlapping it this much is that object


@dataclass(frozen=True)
class Scored:
    box: Box
    product: str  # the best product's id
    score: float  # how sure the search is of it: its likeliest products' share of the probability


def grid_regions(width: int, height: int, scales: Sequence[int] = SCALES) -> list[Box]:
    """R-MAC's regions of a width x height frame, as fractions."""
    short = min(width, height)
    boxes = []
    for level in scales:
        side = 2 * short / (level + 1)
        steps_x = _steps(width, side, level)
        steps_y = _steps(height, side, level)
        for top in steps_y:
            for left in steps_x:
                boxes.append((left / width, top / height, (left + side) / width, (top + side) / height))
    return boxes


def _steps(length: float, side: float, level: int) -> list[float]:
    """Evenly spread starts of a `side` window along `length`, about OVERLAP apart at least."""
    if length <= side:
        return [0.0]
    count = max(level, int(np.ceil((length - side) / (side * (1 - OVERLAP)))) + 1)
    return [float(v) for v in np.linspace(0, length - side, count)]


def proposals(image: Image.Image, detector: Detector | None) -> list[Box]:
    """The whole photo, the grid's regions and the detector's boxes of things a shop may sell."""
    boxes: list[Box] = [WHOLE, *grid_regions(image.width, image.height)]
    if detector is not None:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        boxes += [d.box for d in detector.detect(bgr) if d.score >= DETECTOR_SCORE and d.label not in NOT_PRODUCTS]
    return list(dict.fromkeys(tuple(round(v, 4) for v in b) for b in boxes if area(b) > 0.01))  # type: ignore[misc]


def select(scored: list[Scored], threshold: float, most: int) -> list[Scored]:
    """The objects to answer with, best first; the best proposal is always kept, sure or not.

    People mostly photograph one product, and a part of a photo can look surer of some other
    product than the whole does: a sure whole photo comes first, unless parts of it are sure of
    two or more products, each surer than the whole (a photo of several products).
    """
    whole = scored[0] if scored and scored[0].box == WHOLE else None
    regions = scored[1:] if whole is not None else scored
    parts = _greedy(regions, threshold, most, [])
    surer = {p.product for p in parts if p.score >= threshold and (whole is None or p.score >= whole.score)}
    if len(surer) >= 2 or whole is None:
        return parts
    if whole.score >= threshold:
        return _greedy(regions, threshold, most, [whole])
    return _greedy(scored, threshold, most, [])


def _greedy(scored: list[Scored], threshold: float, most: int, kept: list[Scored]) -> list[Scored]:
    """Adds the sure proposals to `kept`, best first, each unless it clashes with one kept."""
    kept = list(kept)
    for s in sorted(scored, key=lambda s: -s.score):
        if kept and (s.score < threshold or len(kept) >= most):
            break
        if any(_clashes(s, k) for k in kept):
            continue
        kept.append(s)
    return kept


def _clashes(new: Scored, kept: Scored) -> bool:
    inter = _intersection(new.box, kept.box)
    if inter >= SAME_BOX * (area(new.box) + area(kept.box) - inter):
        return True
    return new.product == kept.product and inter >= SAME_PRODUCT_OVERLAP * area(new.box)


def _intersection(a: Box, b: Box) -> float:
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
