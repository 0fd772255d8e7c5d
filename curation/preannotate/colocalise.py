"""Where a product is in each of its review photos, found from those photos alone.

The COCO detector knows eighty kinds of things, and a shop sells many more. But the review
photos of one product share one object, the product, and little else: their rooms differ. Deep
Descriptor Transforming (Wei et al., "Unsupervised object discovery and co-localization by deep
descriptor transformation", Pattern Recognition 2019) uses that: the first principal component
of all the photos' CNN descriptors separates the common object from the rest, so a descriptor
with a positive projection lies on the product. The largest positive region's box gives the
product's coverage. A second product beside it is positive too (it looks like an object), but
only one side of the positive region then looks like the product: the split, the largest
difference in likeness to the product's mean descriptor between two halves of that region, says
how likely a second product is. Counting object-like regions unlike the product did not: on real
photos they are mostly a shop's shelves or a room's furniture behind the product
(tests/benchmarks/rules_agreement_real.py).

The descriptors are those of EfficientNet-Lite0's first stride-32 block, with its ImageNet
weights; tests/benchmarks/rules_agreement.py measures the verdicts they lead to. The network is
models/efficientnet_lite.py, which training fine-tunes too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import ndimage

from models.efficientnet_lite import MEAN, STD, EfficientNetLite, efficientnet_lite

LOCALISER_VERSION = "ddt-efficientnet_lite0-512-split"  # what made a box: in the predictions' model_version
# Input side: 16 x 16 descriptors at stride 32, upsampled four times before the regions are cut.
# A cell is a sixteenth of the frame's side: at 384 px (12 x 12) one cell more or less on each
# side of a box moved its coverage across the 50% line, and the real photos' verdicts
# (rules_agreement_real) were fewer at the same agreement.
SIDE = 512
UPSAMPLE = 4
# Fewer photos than this do not show which object they share.
MIN_PHOTOS = 6
# The components are fitted on at most this many photos of a product; all of them are projected.
FIT_PHOTOS = 300
# Halves of the product's region this different in likeness to the product hold a second object
# (chosen on real photos by tests/benchmarks/rules_agreement_real.py).
SECOND_OBJECT_SPLIT = 0.14
BATCH = 16


@dataclass(frozen=True)
class Location:
    box: tuple[float, float, float, float]  # left, top, right, bottom as fractions of the frame
    n_objects: int  # the product, plus a second object where the split says so
    split: float = 0.0  # 0..2: how differently the two halves of the product's region look like it
    by: str = LOCALISER_VERSION  # what found it

    @property
    def coverage(self) -> float:
        return round((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]), 4)


class CoLocaliser:
    """Locates a product in its review photos; one instance per process, as the network is large."""

    def __init__(self, weights: Path | None = None) -> None:
        self.weights = weights

    @cached_property
    def _net(self) -> EfficientNetLite:
        return efficientnet_lite("efficientnet_lite0", 1000, self.weights).eval()

    def descriptors(self, paths: Sequence[Path]) -> np.ndarray:
        """(photos, 12, 12, channels) descriptors of each photo, resized to a square."""
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        out = []
        for start in range(0, len(paths), BATCH):
            pixels = np.stack([_square(p) for p in paths[start : start + BATCH]])
            x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
            with torch.no_grad():  # a local switch: training may run in this process next
                # The first block of the last stride: descriptors of whole parts, 16 x 16 at 512 px.
                x = self._net.features(x, stride=32)
            out.append(x.permute(0, 2, 3, 1).numpy())
        return np.concatenate(out)

    def locate(self, paths: Sequence[Path]) -> list[Location] | None:
        """The product's place in each of one product's photos; None for too few photos."""
        if len(paths) < MIN_PHOTOS:
            return None
        return locate_in(self.descriptors(paths))


def _square(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
        return np.array(upright.resize((SIDE, SIDE), Image.Resampling.BILINEAR))


def locate_in(descriptors: np.ndarray, second_object_split: float = SECOND_OBJECT_SPLIT) -> list[Location]:
    """Deep Descriptor Transforming over one product's photos' descriptors (photos, h, w, c)."""
    n, h, w, c = descriptors.shape
    fit = descriptors[np.linspace(0, n - 1, min(n, FIT_PHOTOS)).astype(int)].reshape(-1, c)
    mean = fit.mean(axis=0)
    component = np.linalg.svd(fit - mean, full_matrices=False)[2][0]
    projection = (descriptors - mean) @ component  # (n, h, w)
    # The sign of a principal component is arbitrary: the product is what the photos' middles share.
    middle = projection[:, h // 4 : h - h // 4, w // 4 : w - w // 4]
    if middle.mean() < 0:
        projection = -projection
    on = projection > 0
    prototype = descriptors[on].mean(axis=0) if on.any() else mean
    prototype /= max(float(np.linalg.norm(prototype)), 1e-6)
    similarity = (descriptors @ prototype) / np.maximum(np.linalg.norm(descriptors, axis=-1), 1e-6)
    located = []
    for i in range(n):
        box, found = _largest_region(projection[i])
        split = _split(similarity[i], on[i])
        located.append(Location(box, 0 if not found else 1 + int(split >= second_object_split), round(split, 4)))
    return located


def _largest_region(projection: np.ndarray) -> tuple[tuple[float, float, float, float], bool]:
    fine = ndimage.zoom(projection, UPSAMPLE, order=1) > 0
    labels, count = ndimage.label(fine)
    if count == 0:
        return (0.0, 0.0, 0.0, 0.0), False
    areas = ndimage.sum(fine, labels, range(1, count + 1))
    rows, cols = np.nonzero(labels == int(np.argmax(areas)) + 1)
    box = (
        cols.min() / fine.shape[1],
        rows.min() / fine.shape[0],
        (cols.max() + 1) / fine.shape[1],
        (rows.max() + 1) / fine.shape[0],
    )
    return tuple(round(float(v), 4) for v in box), True  # type: ignore[return-value]


def _split(similarity: np.ndarray, on: np.ndarray) -> float:
    """The larger difference in mean likeness to the product between the left and right halves, or
    the top and bottom halves, of the positive cells' extent: large where one side is another object."""
    rows, cols = np.nonzero(on)
    if not len(rows):
        return 0.0
    differences = [0.0]
    for axis, cells in ((0, rows), (1, cols)):
        first = np.arange(similarity.shape[axis]) < (cells.min() + cells.max() + 1) / 2
        halves = (first, ~first)
        low, high = (_mean_on(np.compress(h, similarity, axis=axis), np.compress(h, on, axis=axis)) for h in halves)
        if low is not None and high is not None:
            differences.append(abs(low - high))
    return max(differences)


def _mean_on(values: np.ndarray, cells: np.ndarray) -> float | None:
    """The mean of `values` on the positive `cells`; None for fewer than two, too few to say what a side looks like."""
    return float(values[cells].mean()) if cells.sum() >= 2 else None
