"""Generated photo sets for the training benchmarks: snapshots whose photos lie in a layout's store."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from core.layout import Layout
from demo.shop.generate import GeneratorConfig, generate, load_truth
from search.finder import Finder
from search.indexing import Product
from search.product_index import Entry, ProductIndex
from training.bundle import Ensemble
from training.data import Example, ProductClass, Snapshot
from training.groups import assign_splits
from training.loading import PhotoRef


def show_progress() -> None:
    """Training's epoch lines on stderr, as the command shows them."""
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("training.progress").setLevel(logging.INFO)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shop_snapshot(root: Path, config: GeneratorConfig) -> tuple[Snapshot, Layout]:
    """The demo shop's photos, labelled by the product each shows, split by photo.

    Its store is the shop's folder, so the photos stay where the generator wrote them.
    """
    shop = generate(config, root / "shop")
    truth = [t for t in load_truth(shop).values() if (shop / "photos" / f"{t.photo_id}.jpg").exists()]
    products = sorted({t.product_id for t in truth})
    label = {p: i for i, p in enumerate(products)}
    splits = assign_splits({"all": [t.photo_id for t in truth]}, 0.2, 0.2, seed=0)
    examples = []
    for t in sorted(truth, key=lambda t: t.photo_id):
        path = f"photos/{t.photo_id}.jpg"
        sha = _sha(shop / path)
        examples.append(Example(sha, path, sha, label[t.product_id], splits[t.photo_id]))
    layout = Layout(root / "data")
    layout.data_dir.mkdir(parents=True)
    layout.store_dir.symlink_to(shop)
    classes = [ProductClass(str(p), f"product {p}", "") for p in products]
    return Snapshot(f"shop-{len(examples)}", classes, examples), layout


def tiny_photos(root: Path, n: int, n_classes: int = 50, side: int = 48) -> tuple[Snapshot, Layout]:
    """`n` small photos of random texture in `n_classes` products: many photos, little decoding."""
    layout = Layout(root)
    rng = np.random.default_rng(0)
    examples = []
    for i in range(n):
        rel = f"{i // 1000:03d}/{i}.jpg"
        path = layout.store_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side // 4, side // 4, 3), dtype=np.uint8)).resize((side, side)).save(
            path, quality=80
        )
        sha = _sha(path)
        # Every product in every split: the split turns over once per round of products.
        round_no = (i // n_classes) % 10
        split = "val" if round_no == 0 else "test" if round_no == 1 else "train"
        examples.append(Example(sha, rel, sha, i % n_classes, split))
    classes = [ProductClass(str(c), f"product {c}", "") for c in range(n_classes)]
    return Snapshot(f"tiny-{n}", classes, examples), layout


def finder_over(ensemble: Ensemble, layout: Layout, snapshot: Snapshot, examples: list[Example]) -> Finder:
    """predict's Finder with an index of `examples` (photos in the layout's store), as `reviewlens index` makes one."""
    assert ensemble.embedding is not None
    refs = [PhotoRef(layout.store_dir / e.path, e.sha256, e.box) for e in examples]
    vectors = ensemble.embedding(ensemble.photo_features(refs, layout))
    index = ProductIndex(vectors.shape[1], ensemble.version)
    index.add([Entry(e.key, snapshot.classes[e.label].product_id) for e in examples], vectors.numpy())
    return Finder(ensemble, index, {c.product_id: Product(c.product_id, c.name, c.url) for c in snapshot.classes})
