"""The real photos of ../shared/data/grocery-store, the yardstick for hashing and dedupe."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.layout import Layout

GROCERY = Path(__file__).resolve().parents[3] / "shared" / "data" / "grocery-store" / "dataset"


def grocery_photos() -> list[Path]:
    """Every photo of the dataset (train, val and test), in a fixed order; exits if absent."""
    if not GROCERY.exists():
        sys.exit(f"skipped: {GROCERY} is absent (it lives in ../shared beside the checkout)")
    photos = []
    for split in ("train", "val", "test"):
        for line in (GROCERY / f"{split}.txt").read_text().splitlines():
            if line.strip():
                photos.append(GROCERY / line.split(",")[0].strip().lstrip("/"))
    return photos


def grocery_layout(root: Path) -> Layout:
    """A layout under `root` whose store is the dataset itself: training reads photos from a store."""
    if not (root / "store").exists():
        os.symlink(GROCERY, root / "store")
    return Layout(root)
