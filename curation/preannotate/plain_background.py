"""Where the product is in a photo taken on a plain background: whatever differs from the backdrop.

A shop's own product shots, and the review photos taken on a white sheet or a bare table, show
the product against one colour. There the product's box is exact from the pixels alone, while
the co-localiser (curation/preannotate/colocalise.py) sees the photo through a 16 x 16 grid of
descriptors and often finds only the part the product's photos share most (a carton's label, a
fruit's top). On real catalog photos its box left the verdict wrong or unsure on two in three
(tests/benchmarks/rules_agreement_real.py); this box decides them.

A backdrop is plain when nearly all of the photo's border is within a small tolerance of one
colour; anything else (a room, a shelf, a blurred scene) is left to the co-localiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from curation.preannotate.colocalise import Location

PLAIN_VERSION = "plain-background-256"  # what made a box: in the predictions' model_version
SIDE = 256  # the photo's longer side while it is measured: a box to within half a percent
BORDER = 0.02  # the border ring's width, as a share of the shorter side
# Channel difference from the backdrop's colour still counted as backdrop: JPEG noise and a
# backdrop's gentle shading stay under it, a product's edge does not.
TOLERANCE = 24
PLAIN_SHARE = 0.95  # of the border within the tolerance, for the backdrop to be plain
# Parts of the foreground smaller than this share of the frame are specks or crumbs, not objects.
MIN_PART = 0.01


def on_plain_background(path: Path) -> Location | None:
    """The product's box in a photo on a plain backdrop, and how many separate parts stand on it
    (more than one leaves the one-product rule to a person); None when the backdrop is not plain."""
    with Image.open(path) as img:
        photo = ImageOps.exif_transpose(img).convert("RGB")
        photo.thumbnail((SIDE, SIDE))
        pixels = np.asarray(photo).astype(np.int16)
    height, width, _ = pixels.shape
    ring = max(2, round(BORDER * min(height, width)))
    border = np.concatenate(
        [pixels[:ring].reshape(-1, 3), pixels[-ring:].reshape(-1, 3),
         pixels[:, :ring].reshape(-1, 3), pixels[:, -ring:].reshape(-1, 3)]
    )  # fmt: skip
    backdrop = np.median(border, axis=0)
    if (np.abs(border - backdrop).max(axis=1) <= TOLERANCE).mean() < PLAIN_SHARE:
        return None
    # One step of opening drops single-pixel noise before the parts are counted.
    foreground = ndimage.binary_opening(np.abs(pixels - backdrop).max(axis=2) > TOLERANCE)
    labels, count = ndimage.label(foreground)
    areas = ndimage.sum(foreground, labels, range(1, count + 1)) / (height * width)
    parts = [n + 1 for n in range(count) if areas[n] >= MIN_PART]
    if not parts:
        return None  # an empty backdrop: nothing to measure
    rows, cols = np.nonzero(np.isin(labels, parts))
    box = (cols.min() / width, rows.min() / height, (cols.max() + 1) / width, (rows.max() + 1) / height)
    return Location(tuple(round(float(v), 4) for v in box), len(parts), by=PLAIN_VERSION)  # type: ignore[arg-type]


def prefer_plain(paths: Sequence[Path], colocated: Sequence[Location] | None) -> list[Location | None]:
    """Each photo's location: from its plain backdrop where it has one, else the co-localiser's
    (None where the product's photos were too few to co-localise)."""
    return [on_plain_background(path) or (None if colocated is None else colocated[n]) for n, path in enumerate(paths)]
