"""The real photos of ../shared/data/grocery-store, the yardstick for hashing and dedupe.

At smoke size (`--smoke`) a stand-in of the same shape takes their place: a few demo-shop products
laid out as the dataset lays out its classes, so the benchmark's code runs where ../shared is absent.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from core.layout import Layout
from demo.shop.generate import GeneratorConfig, generate, load_catalog, load_truth
from tests.benchmarks._smoke import SMOKE

REAL_GROCERY = Path(__file__).resolve().parents[3] / "shared" / "data" / "grocery-store" / "dataset"
# Clean photos of four products, and each product's own photo on white (the "iconic" image).
STAND_IN = GeneratorConfig(
    seed=11, n_categories=2, products_per_category=2, photos_per_product=10, small_share=0, multi_share=0,
    repost_share=0, cross_posts=0, no_photo_every=0, catalog_photos=True,
)  # fmt: skip


def stand_in(root: Path) -> Path:
    """A dataset of the grocery set's shape (classes.csv, train/val/test.txt, class folders and
    iconic images) under `root`, made of the demo shop's photos; returns its folder."""
    shop = generate(STAND_IN, root / "shop")
    dataset = root / "dataset"
    truth = sorted(load_truth(shop).values(), key=lambda t: t.photo_id)
    classes = ["Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int),"
               "Iconic Image Path (str),Product Description Path (str)"]  # fmt: skip
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, product in enumerate(load_catalog(shop)):
        name, folder = f"Product-{product.product_id}", f"Demo/{product.category.title()}"
        iconic = f"iconic-images-and-descriptions/{folder}/{name}/{name}_Iconic.jpg"
        (dataset / iconic).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shop / "catalog" / f"{product.product_id}.jpg", dataset / iconic)
        classes.append(f"{name},{label},{product.category},{product.category_id},/{iconic},")
        mine = [t for t in truth if t.product_id == product.product_id]
        for i, t in enumerate(mine):
            split = "val" if i % 5 == 3 else "test" if i % 5 == 4 else "train"
            path = f"{split}/{folder}/{name}/{name}_{i:03d}.jpg"
            (dataset / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shop / "photos" / f"{t.photo_id}.jpg", dataset / path)
            lines[split].append(f"{path}, {label}, {product.category_id}")
    (dataset / "classes.csv").write_text("\n".join(classes) + "\n")
    for split, rows in lines.items():
        (dataset / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return dataset


GROCERY = stand_in(Path(tempfile.mkdtemp(prefix="reviewlens-grocery-stand-in-"))) if SMOKE else REAL_GROCERY


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
