"""A retrain's cost: a train after 10% more photos, over the first train, in one run, in the
default mode of this machine (top on a CPU) or the one given.

The first train runs every photo through each member's frozen lower blocks (quick mode: its
whole body) and keeps that; the retrain finds it in the cache and runs only the new photos. In top
mode the first model is promoted, as the pipeline does, and the retrain goes on from its tuned
top for `top_retrain_epochs` (goal: <= 0.2).

    .venv/bin/python -m tests.benchmarks.retrain_cost [--photos-per-product 60] [--mode quick|top]
"""

from __future__ import annotations

import dataclasses
import time

import torch

from core.settings import TrainConfig
from demo.shop.generate import GeneratorConfig
from tests.benchmarks._photos import shop_snapshot, show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized, train_settings
from training.data import Snapshot
from training.evaluate import promote
from training.train import device, resolve_mode, train_snapshot


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--photos-per-product", type=int, default=sized(60, 10))
    parser.add_argument("--mode", choices=["auto", "quick", "top"], default="auto")
    args = parser.parse_args()
    show_progress()
    shop = GeneratorConfig(seed=5, n_categories=2, products_per_category=5, photos_per_product=args.photos_per_product)
    snapshot, layout = shop_snapshot(workdir("retrain"), shop)
    # Every tenth photo arrives after the first train.
    later = {e.sha256 for i, e in enumerate(snapshot.examples) if i % 10 == 9}
    first_snapshot = dataclasses.replace(
        snapshot, snapshot_id="first", examples=[e for e in snapshot.examples if e.sha256 not in later]
    )
    config = TrainConfig(**train_settings(mode=args.mode))
    mode = resolve_mode(config, device())
    started = time.monotonic()
    first = train_snapshot(first_snapshot, config, layout)
    first_s = time.monotonic() - started
    promote(first, layout)
    started = time.monotonic()
    second = train_snapshot(Snapshot("second", snapshot.classes, snapshot.examples), config, layout)
    second_s = time.monotonic() - started
    embedded = {
        run.name: [
            m["history"]["embedded"] for m in torch.load(run / "model.pt", weights_only=True)["members"].values()
        ]
        for run in (first, second)
    }
    print(
        f"first {mode} train: {len(first_snapshot.examples)} photos, {first_s:.1f} s, embedded {embedded[first.name]}"
    )
    print(f"retrain: {len(snapshot.examples)} photos, {second_s:.1f} s, embedded {embedded[second.name]}")
    print(f"retrain_cost_ratio: {second_s / first_s:.2f}")


if __name__ == "__main__":
    main()
