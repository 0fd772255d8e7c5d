"""Where a product is in each of its review photos, found from those photos alone.

The COCO detector knows eighty kinds of things, and a shop sells many more. But the review
photos of one product share one object, the product, and little else: their rooms differ. Deep
Descriptor Transforming (Wei et al., "Unsupervised object discovery and co-localization by deep
descriptor transformation", Pattern Recognition 2019) uses that: the first principal component
of all the photos' CNN descriptors separates the common object from the rest, so a descriptor
with a positive projection lies on the product. The largest positive region's box gives the
product's coverage. A positive region that looks unlike the product (its descriptors far from
the product's mean descriptor) is something else that looks like an object: a second product.

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

LOCALISER_VERSION = "ddt-efficientnet_lite0"
# Input side: 12 x 12 descriptors at stride 32, upsampled four times before the regions are cut.
SIDE = 384
UPSAMPLE = 4
# Fewer photos than this do not show which object they share.
MIN_PHOTOS = 6
# The components are fitted on at most this many photos of a product; all of them are projected.
FIT_PHOTOS = 300
# A positive descriptor less similar than this to the product's mean is something else ...
SIMILAR = 0.5
# ... and such a region counts as a second object from this share of the frame (chosen on real
# photos by tests/benchmarks/rules_agreement_real.py).
OTHER_OBJECT_SHARE = 0.12
BATCH = 16


@dataclass(frozen=True)
class Location:
    box: tuple[float, float, float, float]  # left, top, right, bottom as fractions of the frame
    n_objects: int  # the product, plus object-like regions unlike it

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
                # The first block of the last stride: descriptors of whole parts, still 12 x 12 at 384 px.
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


def locate_in(
    descriptors: np.ndarray, similar: float = SIMILAR, other_object_share: float = OTHER_OBJECT_SHARE
) -> list[Location]:
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
    return [_regions(projection[i], on[i] & (similarity[i] < similar), other_object_share) for i in range(n)]


def _regions(projection: np.ndarray, unlike: np.ndarray, other_object_share: float) -> Location:
    fine = ndimage.zoom(projection, UPSAMPLE, order=1) > 0
    size = fine.shape[0] * fine.shape[1]
    labels, count = ndimage.label(fine)
    if count == 0:
        return Location((0.0, 0.0, 0.0, 0.0), 0)
    areas = ndimage.sum(fine, labels, range(1, count + 1))
    rows, cols = np.nonzero(labels == int(np.argmax(areas)) + 1)
    box = (
        cols.min() / fine.shape[1],
        rows.min() / fine.shape[0],
        (cols.max() + 1) / fine.shape[1],
        (rows.max() + 1) / fine.shape[0],
    )
    other = ndimage.zoom(unlike.astype(float), UPSAMPLE, order=1) > 0.5
    other_labels, other_count = ndimage.label(other)
    other_areas = ndimage.sum(other, other_labels, range(1, other_count + 1)) if other_count else np.zeros(0)
    return Location(tuple(round(float(v), 4) for v in box), 1 + int((other_areas >= other_object_share * size).sum()))  # type: ignore[arg-type]
