"""The heavy, parallel parts of a flow on a Dask cluster, where one is configured.

With REVIEWLENS_DASK_ADDRESS (a scheduler's tcp://host:port) the flows run on Prefect's Dask task
runner (prefect-dask), and the dedupe's hashing and the index's feature extraction go to the
cluster as Prefect tasks, one per chunk of photos (the training's too: each member's features of
the photos its cache lacks, written to the cache the trainer then reads); the crawl's photo downloads go to it as one
Dask task per photo. Without it nothing changes: the stages use
this machine's processes and threads as they always do. Either way the results are the same.

The cluster's workers run this project's code with the same settings: the data folder at the same
path (a shared file system), or the shared photo store (core/store.py), whose photos each task
fetches to its worker first.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import task, unmapped
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from core.layout import Layout
from core.store import localise
from curation.dedupe.grouping import Hasher
from curation.dedupe.hashing import PhotoCheck, check_chunk

if TYPE_CHECKING:  # torch is imported by the feature tasks alone: a hashing worker never loads it
    from search.indexing import Embedder
    from training.bundle import Ensemble
    from training.loading import PhotoRef
    from training.train import FeatureChunk, FeatureExtractor

# Photos per task at most: a task's overhead (its task run in Prefect's API, its trip through
# the scheduler: a good part of a second on a busy machine) stays small beside its hashing; and
# at least TASKS tasks, so that every worker of a small cluster gets a share.
CHUNK = 1024
TASKS = 4


def dask_address() -> str | None:
    return os.environ.get("REVIEWLENS_DASK_ADDRESS") or None


def task_runner() -> TaskRunner[Any]:
    """Prefect's Dask task runner on the configured cluster, else Prefect's default."""
    address = dask_address()
    if address is None:
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def _chunks(items: list[str]) -> list[list[str]]:
    size = max(1, min(CHUNK, -(-len(items) // TASKS)))
    return [items[i : i + size] for i in range(0, len(items), size)]


@task
def hash_chunk_task(data_dir: str, names: list[str], min_side: int) -> list[PhotoCheck]:
    layout = Layout(Path(data_dir))
    localise(layout, names)
    return check_chunk([layout.store_dir / name for name in names], min_side)


def cluster_hasher(layout: Layout) -> Hasher:
    """The dedupe's hashing as one Prefect task per chunk, on the flow's task runner."""

    def hasher(paths: list[Path], min_side: int) -> list[PhotoCheck]:
        names = [str(path.relative_to(layout.store_dir)) for path in paths]
        futures = hash_chunk_task.map(unmapped(str(layout.data_dir)), _chunks(names), unmapped(min_side))
        return [check for future in futures for check in future.result()]

    return hasher


@functools.lru_cache(maxsize=2)
def _model(file: str, mtime_ns: int) -> Ensemble:
    """The model a worker embeds with, loaded once per worker process (and again if replaced)."""
    from training.bundle import Ensemble

    return Ensemble.load(Path(file))


@task
def embed_chunk_task(data_dir: str, model: str, photos: list[PhotoRef]) -> np.ndarray:
    from search.indexing import embed_here

    layout = Layout(Path(data_dir))
    localise(layout, [str(p.path.relative_to(layout.store_dir)) for p in photos])
    file = Path(model) / "model.pt" if Path(model).is_dir() else Path(model)
    return embed_here(_model(str(file), file.stat().st_mtime_ns), layout, photos)


def cluster_embedder(layout: Layout, model: Path) -> Embedder:
    """The index's feature extraction as one Prefect task per batch of photos, on the flow's task
    runner; the batches come back in order as each finishes."""

    def embed(batches: list[list[PhotoRef]]) -> Iterator[np.ndarray]:
        futures = embed_chunk_task.map(unmapped(str(layout.data_dir)), unmapped(str(model)), batches)
        return (future.result() for future in futures)

    return embed


@task
def extract_chunk_task(chunk: FeatureChunk) -> int:
    from training.train import extract_chunk

    localise(chunk.layout, [e.path for e in chunk.examples])
    return extract_chunk(chunk)


def cluster_extractor() -> FeatureExtractor:
    """The training's feature extraction as one Prefect task per chunk, on the flow's task
    runner; it returns once every chunk is in the feature cache."""

    def extract(chunks: list[FeatureChunk]) -> None:
        for future in extract_chunk_task.map(chunks):
            future.result()

    return extract


@contextmanager
def cluster_downloads() -> Iterator[tuple[Executor, int]]:
    """The configured cluster as an executor for the crawl's photo downloads (a Dask task per
    photo: a Prefect task run each would cost more than the download), and how many worker
    processes share the photo hosts' rate."""
    from distributed import Client

    with Client(dask_address()) as client:
        yield client.get_executor(), max(1, len(client.scheduler_info()["workers"]))
