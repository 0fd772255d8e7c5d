"""From a shop's catalog photo alone to its customers' photos, on ../shared/data/grocery-store.

The index holds only each product's iconic photo (the shop's own, on white): 81 photos. The
queries are the real test photos. Recall@K: the share of queries whose product is among the K
products answered. Three runs, side by side:

1. No trained model: the members' pretrained bodies (training/pretrained.py), as `reviewlens
   index` builds it before any training; queries: all test photos.
2. The search embedding trained (quick mode) on the photos of 60 products, the index the
   same 81 catalog photos; queries: the 21 unseen products' test photos, answered among all 81.

Each is asked as `predict` asks: `Finder.answer` on the whole photo (stored features, all
queries) and through the object search (decoded photos, a sample of `--objects` queries).
Beside them, on the same queries: the frozen features of the same members, each L2-normalized and
joined, matched to the catalog photos by cosine alone (no index, no Finder).

3. The index as a shop's really is: the 81 catalog photos and the 60 trained products' customer
   photos (their train split) together, so that a product with no customer photo competes with
   products that have many; queried on the unseen and the seen products' test photos, with the
   frozen bodies and with the trained embedding, answered by `Finder.answer` on the whole photo.
   Once with the catalog photos marked as the index stage marks them (searched apart, their
   similarity in customer photos' terms: training/embedding.py, and for the frozen bodies
   search/catalog_map.py on this index), once unmarked, one kind of photo as the index held them
   before.

The embedding is trained with the 60 products' catalog photos among their training photos, as a
crawl brings them, so that it fits the catalog photos' map on validation.

    .venv/bin/python -m tests.benchmarks.catalog_to_photo [--workdir DIR] [--objects N]
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.layout import Layout
from core.settings import TrainConfig
from search.catalog_map import index_catalog_map
from search.finder import Answer, Finder
from search.indexing import Product
from search.product_index import Entry, ProductIndex
from tests.benchmarks._grocery import GROCERY, grocery_layout, grocery_photos
from tests.benchmarks._photos import show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from tests.benchmarks.grocery_accuracy import grocery_snapshot
from tests.benchmarks.open_set import seen_products
from training.bundle import Ensemble
from training.data import Example, Snapshot, load_image
from training.loading import PhotoRef
from training.pretrained import pretrained_ensemble
from training.train import train_snapshot


def catalog_refs(snapshot: Snapshot) -> list[tuple[PhotoRef, str]]:
    """Each product's iconic photo (a store path under the dataset) and its product id."""
    paths = {}
    for line in (GROCERY / "classes.csv").read_text().splitlines()[1:]:
        cols = line.split(",")
        paths[cols[1]] = cols[4].strip().lstrip("/")
    refs = []
    for c in snapshot.classes:
        file = GROCERY / paths[c.product_id]
        refs.append((PhotoRef(file, hashlib.sha256(file.read_bytes()).hexdigest()), c.product_id))
    return refs


def with_catalog_photos(seen_snapshot: Snapshot, snapshot: Snapshot) -> Snapshot:
    """`seen_snapshot` with each of its products' catalog photo among its training photos, marked
    as a crawl marks it."""
    label_of = {c.product_id: n for n, c in enumerate(seen_snapshot.classes)}
    root = GROCERY.resolve()
    catalog = [
        Example(
            str(r.sha256), str(r.path.resolve().relative_to(root)), str(r.sha256), label_of[p], "train", catalog=True
        )
        for r, p in catalog_refs(snapshot)
        if p in label_of
    ]
    return replace(
        seen_snapshot, snapshot_id=f"{seen_snapshot.snapshot_id}-catalog", examples=[*seen_snapshot.examples, *catalog]
    )


def recall(answers: list[Answer], truth: list[str], k: int) -> float:
    hits = [t in [m.product.product_id for m in a.best.matches[:k]] for a, t in zip(answers, truth, strict=True)]
    return 100 * float(np.mean(hits))


def frozen_recall(catalog: dict[str, torch.Tensor], queries: dict[str, torch.Tensor], ids: list[str],
                  truth: list[str], k: int) -> float:  # fmt: skip
    """The baseline: frozen features, each member's L2-normalized, joined; cosine to each catalog photo."""
    gallery = torch.cat([F.normalize(catalog[m], dim=1) for m in catalog], 1)
    asked = torch.cat([F.normalize(queries[m], dim=1) for m in catalog], 1)
    top = (asked @ gallery.T).topk(k, 1).indices
    return 100 * float(np.mean([t in [ids[int(i)] for i in row] for row, t in zip(top, truth, strict=True)]))


def finder_over_catalog(ensemble: Ensemble, layout: Layout, snapshot: Snapshot) -> Finder:
    assert ensemble.embedding is not None
    refs = catalog_refs(snapshot)
    vectors = ensemble.embedding(ensemble.photo_features([r for r, _ in refs], layout)).numpy()
    index = ProductIndex(vectors.shape[1], ensemble.version)
    index.add([Entry(str(r.key), p, catalog=True) for r, p in refs], vectors)
    names = {c.product_id: c.name for c in snapshot.classes}
    products = {p: Product(p, names[p], "", str(r.path)) for r, p in refs}
    return Finder(ensemble, index, products)


def measure(
    name: str, finder: Finder, layout: Layout, snapshot: Snapshot, queries: list[Example], objects: int
) -> dict[str, float]:
    ensemble = finder.ensemble
    truth = [snapshot.classes[e.label].product_id for e in queries]
    refs = [PhotoRef(layout.store_dir / e.path, e.sha256) for e in queries]
    features = ensemble.photo_features(refs, layout)
    whole = finder.answer_features(features, k=3)
    catalog = ensemble.photo_features([r for r, _ in catalog_refs(snapshot)], layout)
    ids = [p for _, p in catalog_refs(snapshot)]
    sample = random.Random(0).sample(range(len(queries)), min(objects, len(queries)))
    started = time.monotonic()
    found = [finder.answer([load_image(refs[i].path)], k=3)[0] for i in sample]
    seconds = (time.monotonic() - started) / max(1, len(sample))
    # An object search answers several objects: the query counts as found where any object's
    # answers hold its product, as a shopper looks through them.
    objects_hit = [
        any(truth[i] in [m.product.product_id for m in o.matches[:k]] for o in a.objects)
        for a, i in zip(found, sample, strict=True)
        for k in (1, 3)
    ]
    out = {
        "queries": len(queries),
        "whole R@1": recall(whole, truth, 1),
        "whole R@3": recall(whole, truth, 3),
        "objects R@1": 100 * float(np.mean(objects_hit[0::2])) if sample else float("nan"),
        "objects R@3": 100 * float(np.mean(objects_hit[1::2])) if sample else float("nan"),
        "objects per photo": float(np.mean([len(a.objects) for a in found])) if sample else float("nan"),
        "seconds per object search": seconds,
        "frozen joined R@1": frozen_recall(catalog, features, ids, truth, 1),
        "frozen joined R@3": frozen_recall(catalog, features, ids, truth, 3),
    }
    print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()), flush=True)
    return out


def shop_index(name: str, ensemble: Ensemble, layout: Layout, snapshot: Snapshot, seen: set[int]) -> dict[str, float]:
    """Run 3 of the module's docstring: Recall@1/@3 of the unseen and the seen products' test
    photos, answered by `Finder.answer` over catalog and customer photos in one index; with the
    catalog photos marked as the index stage marks them, and unmarked, as one kind of photo."""
    assert ensemble.embedding is not None
    catalog = catalog_refs(snapshot)
    customers = [e for e in snapshot.examples if e.label in seen and e.split == "train"]
    refs = [r for r, _ in catalog] + [PhotoRef(layout.store_dir / e.path, e.sha256) for e in customers]
    ids = [p for _, p in catalog] + [snapshot.classes[e.label].product_id for e in customers]
    vectors = ensemble.embedding(ensemble.photo_features(refs, layout)).numpy()
    names = {c.product_id: c.name for c in snapshot.classes}
    products = {p: Product(p, names[p], "", str(r.path)) for r, p in catalog}
    out: dict[str, float] = {}
    for label, marked in (("marked", True), ("one kind", False)):
        index = ProductIndex(vectors.shape[1], ensemble.version)
        index.add(
            [Entry(str(r.key), p, marked and n < len(catalog)) for n, (r, p) in enumerate(zip(refs, ids, strict=True))],
            vectors,
        )
        if ensemble.embedding.weight is None:  # no training fitted its map: the index stage fits it
            mapped = index_catalog_map(index, {}) if marked else (1.0, 0.0)
            ensemble.embedding.catalog_scale, ensemble.embedding.catalog_shift = mapped
            print(f"{name}, {label}: a catalog photo's similarity s counts as {mapped[0]:.2f}s {mapped[1]:+.2f}")
        finder = Finder(ensemble, index, products)
        for part, pick in (("unseen", False), ("seen", True)):
            queries = [e for e in snapshot.split("test") if (e.label in seen) == pick]
            truth = [snapshot.classes[e.label].product_id for e in queries]
            features = ensemble.photo_features([PhotoRef(layout.store_dir / e.path, e.sha256) for e in queries], layout)
            answers = finder.answer_features(features, k=3)
            for k in (1, 3):
                out[f"{part} {label} R@{k}"] = recall(answers, truth, k)
    print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--workdir", type=Path, help="an earlier run's folder, whose cached features are reused")
    parser.add_argument("--objects", type=int, default=sized(200, 4), help="queries asked through the object search")
    parser.add_argument("--seed", type=int, default=0, help="which 60 products the embedding is trained on")
    args = parser.parse_args()
    show_progress()
    grocery_photos()  # exits with a reason when ../shared is absent
    snapshot = grocery_snapshot()
    layout = grocery_layout(args.workdir or workdir("catalog"))
    config = TrainConfig(mode="quick", seed=args.seed)
    test = snapshot.split("test")

    # 1. Before any training: the pretrained bodies.
    pretrained = pretrained_ensemble(config)
    before = measure("no trained model", finder_over_catalog(pretrained, layout, snapshot), layout, snapshot,
                     test, args.objects)  # fmt: skip

    # 2. The embedding trained on 60 products' review photos; the 21 others' test photos asked.
    seen_snapshot, seen = seen_products(snapshot, args.seed, f"catalog-seen-{args.seed}")
    seen_snapshot = with_catalog_photos(seen_snapshot, snapshot)
    trained = Ensemble.load(train_snapshot(seen_snapshot, config, layout))
    unseen_test = [e for e in test if e.label not in seen]
    after = measure("embedding trained on 60 products, unseen queries", finder_over_catalog(trained, layout, snapshot),
                    layout, snapshot, unseen_test, args.objects)  # fmt: skip
    before_finder = finder_over_catalog(pretrained, layout, snapshot)
    frozen_unseen = measure("no trained model, unseen queries", before_finder, layout, snapshot, unseen_test, 0)

    print("| index: 81 catalog photos | queries | whole R@1 | R@3 | objects R@1 | R@3 | frozen joined R@1 | R@3 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in (("no trained model, all test photos", before), ("no trained model, unseen products", frozen_unseen),
                    ("trained on 60 products, unseen products", after)):  # fmt: skip
        cells = " | ".join(f"{r[k]:.1f}" for k in ("whole R@1", "whole R@3", "objects R@1", "objects R@3",
                                                  "frozen joined R@1", "frozen joined R@3"))  # fmt: skip
        print(f"| {name} | {r['queries']:.0f} | {cells} |")
    bodies = (("frozen bodies", pretrained), ("trained embedding", trained))
    shop = {name: shop_index(name, e, layout, snapshot, seen) for name, e in bodies}
    print()
    print("| index: 81 catalog + 60 products' customer photos, whole photo | unseen R@1 | R@3 | seen R@1 | R@3 |")
    print("|---|---:|---:|---:|---:|")
    for name, r in shop.items():
        for label, how in (("one kind", "catalog photos unmarked"), ("marked", "catalog photos marked")):
            cells = " | ".join(f"{r[f'{part} {label} R@{k}']:.1f}" for part in ("unseen", "seen") for k in (1, 3))
            print(f"| {name}, {how} | {cells} |")
    print(f"catalog_to_photo_unseen_recall_at_3: {after['whole R@3']:.1f}")


if __name__ == "__main__":
    main()
