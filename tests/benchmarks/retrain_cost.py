"""A retrain's cost: a quick train after 10% more photos, over the first quick train, in one run.

The first train computes every member's features; the retrain finds those in the feature cache
and embeds only the new photos (goal: <= 0.2).

    .venv/bin/python -m tests.benchmarks.retrain_cost [--photos-per-product 60]
"""

from __future__ import annotations

import dataclasses
import time

import torch

from core.settings import TrainConfig
from reviewlens.demoshop.generate import GeneratorConfig
from tests.benchmarks._photos import shop_snapshot, show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized, train_settings
from training.data import Snapshot
from training.train import train_snapshot


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--photos-per-product", type=int, default=sized(60, 10))
    args = parser.parse_args()
    show_progress()
    shop = GeneratorConfig(seed=5, n_categories=2, products_per_category=5, photos_per_product=args.photos_per_product)
    snapshot, layout = shop_snapshot(workdir("retrain"), shop)
    # Every tenth photo arrives after the first train.
    later = {e.sha256 for i, e in enumerate(snapshot.examples) if i % 10 == 9}
    first_snapshot = dataclasses.replace(
        snapshot, snapshot_id="first", examples=[e for e in snapshot.examples if e.sha256 not in later]
    )
    config = TrainConfig(**train_settings(mode="quick"))
    started = time.monotonic()
    first = train_snapshot(first_snapshot, config, layout)
    first_s = time.monotonic() - started
    started = time.monotonic()
    second = train_snapshot(Snapshot("second", snapshot.classes, snapshot.examples), config, layout)
    second_s = time.monotonic() - started
    embedded = {
        run.name: [
            m["history"]["embedded"] for m in torch.load(run / "model.pt", weights_only=True)["members"].values()
        ]
        for run in (first, second)
    }
    print(f"first quick train: {len(first_snapshot.examples)} photos, {first_s:.1f} s, embedded {embedded[first.name]}")
    print(f"retrain: {len(snapshot.examples)} photos, {second_s:.1f} s, embedded {embedded[second.name]}")
    print(f"retrain_cost_ratio: {second_s / first_s:.2f}")


if __name__ == "__main__":
    main()
