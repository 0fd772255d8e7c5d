"""Hashing and feature extraction of the same real photos on a local Dask cluster of two worker
processes, through Prefect's Dask task runner, against the default (this machine's own process
pool for hashing, this process for features), in one run: the same results, and the time each.

Hashing: every grocery photo, the dedupe's checks. Features: the index's search vectors of the
grocery test photos with a model trained here in quick mode; the feature cache is emptied before
each side, so both extract every feature. The cluster's side runs twice: the first pays for each
worker's start (importing the code, loading the model), the second is a warm cluster's pace.

    .venv/bin/python -m tests.benchmarks.dask_scale [--feature-photos N]
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import numpy as np
from distributed import LocalCluster
from prefect import flow
from prefect_dask import DaskTaskRunner

from core.settings import DedupeConfig, TrainConfig
from curation.dedupe.hashing import check_photos
from flows.dask import cluster_embedder, cluster_hasher
from search.indexing import embed_here
from tests.benchmarks._grocery import grocery_layout, grocery_photos
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import train_settings
from tests.benchmarks.grocery_accuracy import grocery_snapshot
from training.bundle import Ensemble
from training.loading import PhotoRef
from training.train import train_snapshot

BATCH = 128  # photos per feature task


def _timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = work()
    return result, time.monotonic() - started


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--feature-photos", type=int, default=1000)
    args = parser.parse_args()
    layout = grocery_layout(workdir("dask"))
    photos = [layout.store_dir / p.relative_to(layout.store_dir.resolve()) for p in grocery_photos()]
    min_side = DedupeConfig().min_side

    snapshot = grocery_snapshot()
    config = TrainConfig(**train_settings(mode="quick", members=("efficientnet_lite0",), image_size=96))
    model = train_snapshot(snapshot, config, layout)
    ensemble = Ensemble.load(model)
    tests = [e for e in snapshot.examples if e.split == "test"][: args.feature_photos]
    refs = [PhotoRef(layout.store_dir / e.path, e.sha256) for e in tests]
    batches = [refs[i : i + BATCH] for i in range(0, len(refs), BATCH)]

    def features_here() -> np.ndarray:
        shutil.rmtree(layout.cache_dir)
        return np.concatenate([embed_here(ensemble, layout, batch) for batch in batches])

    here_checks, here_hash_s = _timed(lambda: list(check_photos(photos, min_side)))
    here_vectors, here_feature_s = _timed(features_here)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:

        @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        def hash_on_the_cluster() -> list[Any]:
            return list(cluster_hasher(layout)(photos, min_side))

        @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        def embed_on_the_cluster() -> np.ndarray:
            shutil.rmtree(layout.cache_dir)
            return np.concatenate(list(cluster_embedder(layout, model)(batches)))

        _, cold_hash_s = _timed(hash_on_the_cluster)
        _, cold_feature_s = _timed(embed_on_the_cluster)
        there_checks, there_hash_s = _timed(hash_on_the_cluster)
        there_vectors, there_feature_s = _timed(embed_on_the_cluster)

    same_hashes = [(c.ok, c.phash, c.centre_hash) for c in here_checks] == [
        (c.ok, c.phash, c.centre_hash) for c in there_checks
    ]
    largest_difference = float(np.abs(here_vectors - there_vectors).max())
    same_nearest = bool((np.argmax(there_vectors @ here_vectors.T, axis=1) == np.arange(len(refs))).all())
    n, m = len(photos), len(refs)
    print(f"hashing {n} photos: default {n / here_hash_s:.0f}/s, Dask {n / there_hash_s:.0f}/s", end="")
    print(f" (its first run {n / cold_hash_s:.0f}/s)", end="")
    print(f"; identical: {same_hashes}")
    print(
        f"features of {m} photos: default {m / here_feature_s:.1f}/s, Dask {m / there_feature_s:.1f}/s "
        f"(its first run {m / cold_feature_s:.1f}/s); "
        f"largest difference {largest_difference:.2g}, each photo's nearest is itself: {same_nearest}"
    )
    overhead = ((there_hash_s - here_hash_s) / n + (there_feature_s - here_feature_s) / m) * 1000
    print(f"dask_over_default_hashing: {here_hash_s / there_hash_s:.2f}")
    print(f"dask_over_default_features: {here_feature_s / there_feature_s:.2f}")
    print(f"identical_results: {int(same_hashes and same_nearest)}")
    print(f"dask_overhead_ms_per_photo: {overhead:.2f}")


if __name__ == "__main__":
    main()
