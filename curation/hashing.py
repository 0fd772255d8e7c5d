"""Decoding a stored photo for checks, and its 64-bit perceptual hash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps


@dataclass(frozen=True)
class PhotoCheck:
    ok: bool
    reason: str  # empty when ok
    phash: int | None


def check_photo(path: Path, min_side: int) -> PhotoCheck:
    """Decodes the photo upright and returns whether it is usable and its pHash.

    An unreadable photo is a result with a reason, never an exception: one bad file must not
    stop a batch.
    """
    try:
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError) as exc:
        return PhotoCheck(False, f"undecodable: {exc}", None)
    if min(upright.size) < min_side:
        return PhotoCheck(False, f"too small: {upright.width}x{upright.height}", None)
    return PhotoCheck(True, "", int(str(imagehash.phash(upright)), 16))


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Returns the Hamming distances between every uint64 hash of `a` and every one of `b`."""
    x = np.bitwise_xor(a[:, None], b[None, :])
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)
