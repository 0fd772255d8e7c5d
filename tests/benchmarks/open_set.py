"""Products never trained on, found by the search embedding: the protocol of Stanford Online
Products (Oh Song et al., 2016) on ../shared/data/grocery-store.

The grocery store's 81 products are split at random into 60 seen and 21 unseen. The pipeline's
own training (quick mode, or `--mode top`) runs on the seen products' train and val photos only
(classifier, calibration and the search embedding). The unseen products' train and val photos
form an index; their test photos are the queries. Recall@K: the share of queries whose product is among the K distinct
products of the nearest photos. Beside it, on the same queries, the members' own features (each
L2-normalized, joined) and Lite0's alone: frozen ImageNet bodies in quick mode, the tuned ones in
top mode.

Closed set, on the seen products' test photos: the classifier's Top-1, and the Top-1 of what
`predict` answers (classifier and index merged, the index holding every product's train and val
photos): below the classifier's, which never weighs a product it was not trained on, by what
finding those products costs (training/embedding.py::merge).

    .venv/bin/python -m tests.benchmarks.open_set [--splits 3] [--workdir DIR] [--first-seed N]
        [--mode top --budget-minutes 25]
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.layout import Layout
from core.settings import TrainConfig
from search.finder import Finder
from search.indexing import Product
from search.product_index import Entry, ProductIndex
from tests.benchmarks._grocery import grocery_layout
from tests.benchmarks._photos import show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from tests.benchmarks.grocery_accuracy import grocery_snapshot
from training.bundle import Ensemble
from training.data import Example, Snapshot
from training.loading import PhotoRef
from training.train import train_snapshot

SEEN = sized(60, 2)  # of the grocery set's 81 products (of the stand-in's 4 at smoke size)


def recall(index: ProductIndex, queries: np.ndarray, truth: list[str], k: int) -> float:
    """Share of queries whose product is among the first `k` distinct products of the nearest photos."""
    _, rows = index.search(queries, 200)
    hits = 0
    for row, product in zip(rows, truth, strict=True):
        found = list(dict.fromkeys(index.entries[r].product_id for r in row if r >= 0))[:k]
        hits += product in found
    return 100 * hits / len(truth)


def index_of(examples: list[Example], vectors: np.ndarray, name: str) -> ProductIndex:
    index = ProductIndex(vectors.shape[1], name)
    index.add([Entry(e.sha256, str(e.label)) for e in examples], vectors)
    return index


def seen_products(snapshot: Snapshot, seed: int, name: str) -> tuple[Snapshot, set[int]]:
    """SEEN products drawn at random (by `seed`), relabelled 0..SEEN-1 for training, and their labels."""
    products = list(range(len(snapshot.classes)))
    random.Random(seed).shuffle(products)
    seen = set(products[:SEEN])
    relabel = {p: i for i, p in enumerate(sorted(seen))}
    examples = [
        Example(e.sha256, e.path, e.group_id, relabel[e.label], e.split) for e in snapshot.examples if e.label in seen
    ]
    return Snapshot(name, [snapshot.classes[p] for p in sorted(seen)], examples), seen


def one_split(snapshot: Snapshot, layout: Layout, seed: int, config: TrainConfig) -> dict[str, float]:
    seen_snapshot, seen = seen_products(snapshot, seed, f"open-set-{seed}")
    unseen = set(range(len(snapshot.classes))) - seen
    started = time.monotonic()
    run_dir = train_snapshot(seen_snapshot, replace(config, seed=seed), layout)
    train_seconds = time.monotonic() - started
    ensemble = Ensemble.load(run_dir)
    assert ensemble.embedding is not None
    refs = [PhotoRef(layout.store_dir / e.path, e.sha256) for e in snapshot.examples]
    features = ensemble.photo_features(refs, layout)
    row_of = {e.sha256: i for i, e in enumerate(snapshot.examples)}

    def rows(examples: list[Example]) -> list[int]:
        return [row_of[e.sha256] for e in examples]

    bodies = "frozen" if config.mode == "quick" else "tuned"
    kinds = {
        "trained embedding": ensemble.embedding(features).numpy(),
        f"{bodies}, same members": torch.cat([F.normalize(f, dim=1) for f in features.values()], 1).numpy(),
        f"{bodies}, Lite0 alone": F.normalize(features["efficientnet_lite0"], dim=1).numpy(),
    }
    gallery = [e for e in snapshot.examples if e.label in unseen and e.split != "test"]
    queries = [e for e in snapshot.examples if e.label in unseen and e.split == "test"]
    truth = [str(e.label) for e in queries]
    out: dict[str, float] = {"train_seconds": train_seconds}
    for kind, vectors in kinds.items():
        index = index_of(gallery, vectors[rows(gallery)], kind)
        q = vectors[rows(queries)]
        out[f"{kind} R@1"], out[f"{kind} R@3"] = recall(index, q, truth, 1), recall(index, q, truth, 3)

    # Closed set: the classifier alone, and predict's merge with an index of every product.
    seen_test = [e for e in seen_snapshot.examples if e.split == "test"]
    test_features = {name: f[rows(seen_test)] for name, f in features.items()}
    labels = torch.tensor([e.label for e in seen_test])
    classifier = ensemble.ensemble_probs(ensemble.logits_of_features(test_features))
    out["closed classifier top1"] = 100 * float((classifier.argmax(1) == labels).float().mean())
    everything = [e for e in snapshot.examples if e.split != "test"]
    full_index = ProductIndex(kinds["trained embedding"].shape[1], ensemble.version)
    full_index.add(
        [Entry(e.sha256, snapshot.classes[e.label].product_id) for e in everything],
        kinds["trained embedding"][rows(everything)],
    )
    catalog = {c.product_id: Product(c.product_id, c.name, c.url) for c in snapshot.classes}
    finder = Finder(ensemble, full_index, catalog)
    merged = [a.best.matches[0].product.product_id for a in finder.answer_features(test_features, k=1)]
    expected = [seen_snapshot.classes[int(y)].product_id for y in labels]
    out["closed merged top1"] = 100 * float(np.mean([m == p for m, p in zip(merged, expected, strict=True)]))
    # Open set as predict meets it: the unseen products' queries against that index, merged.
    query_features = {name: f[rows(queries)] for name, f in features.items()}
    found = [a.best.matches[0].product.product_id for a in finder.answer_features(query_features, k=1)]
    out["open merged top1"] = 100 * float(
        np.mean([f == snapshot.classes[e.label].product_id for f, e in zip(found, queries, strict=True)])
    )
    return out


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--splits", type=int, default=sized(3, 1), help="random 60/21 product splits, averaged")
    parser.add_argument("--workdir", type=Path, help="an earlier run's folder, whose cached features are reused")
    parser.add_argument("--first-seed", type=int, default=0, help="the first split's seed: go on where a run stopped")
    parser.add_argument("--mode", choices=("quick", "top"), default="quick", help="how the seen products are trained")
    parser.add_argument("--budget-minutes", type=float, default=0.0, help="top mode's time budget a split (0: none)")
    args = parser.parse_args()
    show_progress()
    config = TrainConfig(mode=args.mode, budget_minutes=args.budget_minutes)
    snapshot = grocery_snapshot()
    layout = grocery_layout(args.workdir or workdir("grocery"))
    seeds = range(args.first_seed, args.first_seed + args.splits)
    results = [one_split(snapshot, layout, seed, config) for seed in seeds]
    for seed, r in zip(seeds, results, strict=True):
        print(f"split {seed}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()))
    mean = {k: sum(r[k] for r in results) / len(results) for k in results[0]}
    print(f"mean of {len(results)} splits (60 seen / 21 unseen products; queries: the unseen products' test photos):")
    for k, v in mean.items():
        print(f"  {k}: {v:.1f}")
    print(f"open_set_recall_at_1: {mean['trained embedding R@1']:.1f}")


if __name__ == "__main__":
    main()
