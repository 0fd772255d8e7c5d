"""The photos as training reads them: decoded once, shrunk, and kept on disk, not in memory.

Each photo is written once as a JPEG whose short side is the largest any member asks for, under
`cache/photos/<side>/<first two hex digits>/<sha256>.jpg`. Reading one is a small decode, so the
loader's workers read them as needed and memory does not grow with the number of photos. A view
of a photo cut to a box is cut from the full photo before shrinking, and kept under its own key
(`<sha256>#<box>`), so a small product keeps the pixels it has.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from core.boxes import Box, crop
from training.data import load_image

# Quality 95 keeps what the models see: the shrink costs more detail than the encoding.
JPEG_QUALITY = 95


class PhotoCache:
    """Shrunk copies of the store's photos, keyed by content hash: one folder per short side."""

    def __init__(self, root: Path, side: int) -> None:
        self.side = side
        self.root = Path(root) / str(side)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.jpg"

    def open(self, key: str, original: Path, box: Box | None = None) -> Image.Image:
        """The photo (cut to `box`, when given) shrunk to the cache's short side, read from the
        cache or made and kept there under `key`."""
        cached = self.path(key)
        try:
            with Image.open(cached) as kept:
                return kept.convert("RGB")
        except (FileNotFoundError, OSError):
            pass  # not cached yet, or a write that was cut short: made again from the original
        img = load_image(original)
        img = shrink(img if box is None else crop(img, box), self.side)
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Written under a name of this process and renamed: a reader never sees half a file, and
        # two workers making the same photo both end with a whole one.
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        img.save(partial, "JPEG", quality=JPEG_QUALITY)
        partial.replace(cached)
        return img


def shrink(img: Image.Image, side: int) -> Image.Image:
    """`img` with its short side at `side` (never enlarged), aspect kept."""
    scale = side / min(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # reducing_gap: a box filter first, then bicubic, as fast as a draft and as sharp as bicubic.
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
