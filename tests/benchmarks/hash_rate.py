"""pHash throughput over all 5,421 grocery-store photos: reviewlens vs a plain imagehash loop.

reviewlens decodes JPEGs at reduced size in greyscale (draft mode), upright, across every core;
the baseline is `imagehash.phash(Image.open(path))` one photo after another. Also reports how
many hashes differ from the plain ones, and by how many bits.

    .venv/bin/python -m tests.benchmarks.hash_rate
"""

from __future__ import annotations

import os
import time

import imagehash
import numpy as np
from PIL import Image

from curation.dedupe.hashing import check_photos
from tests.benchmarks._grocery import grocery_photos
from tests.benchmarks._smoke import parser


def main() -> None:
    parser(__doc__).parse_args()
    photos = grocery_photos()
    started = time.monotonic()
    plain = [int(str(imagehash.phash(Image.open(p))), 16) for p in photos]
    plain_s = time.monotonic() - started

    started = time.monotonic()
    ours = [c.phash for c in check_photos(photos, min_side=1)]
    ours_s = time.monotonic() - started

    a, b = np.array(plain, dtype=np.uint64), np.array(ours, dtype=np.uint64)
    bits = np.bitwise_count(a ^ b)
    differ = bits[bits > 0]
    print(f"photos: {len(photos)}, cores: {os.cpu_count()}")
    print(f"plain_photos_per_s: {len(photos) / plain_s:.0f}")
    print(f"reviewlens_photos_per_s: {len(photos) / ours_s:.0f}")
    print(f"hashes_differing: {len(differ)} of {len(photos)} ({100 * len(differ) / len(photos):.1f}%)")
    print(f"differing_bits_mean: {differ.mean() if len(differ) else 0:.2f}, max: {bits.max()}")
    print(f"hash_speedup: {plain_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
