"""Work spread by Dask: a real local cluster of two worker processes, through Prefect's Dask task
runner, gives the same manifest as this machine's own processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from distributed import Client, LocalCluster
from prefect import flow
from prefect_dask import DaskTaskRunner

from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import DedupeConfig, TrainConfig
from curation.dedupe.grouping import dedupe
from demo.shop.server import DemoShop
from flows.dask import TASKS, cluster_extractor
from tests.conftest import crawl_config
from tests.db import crawled, run
from tests.procs import ROOT
from training.bundle import Ensemble
from training.train import train


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local,
        Client(local) as client,
    ):
        yield client


def _curation(layout: Layout) -> list[tuple[object, ...]]:
    with open_manifest(layout) as m:
        return [tuple(r) for r in run(m, "SELECT * FROM curation ORDER BY sha256").fetchall()]


def _flow(flow: str, layout: Layout, cluster: Client, *args: str) -> None:
    """Runs a flow of flows/pipeline.py as a worker would, with the cluster's address set."""
    env = {**os.environ, "REVIEWLENS_DASK_ADDRESS": cluster.scheduler.address}  # type: ignore[union-attr]
    call = ", ".join([repr(str(layout.data_dir)), *args])
    code = f"from flows.pipeline import *; from core.settings import *; print({flow}({call}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _tasks_run(client: Client) -> dict[str, int]:
    """How many tasks of each kind the cluster's scheduler finished (held a result of)."""

    def count(dask_scheduler: object) -> dict[str, int]:
        prefixes = dask_scheduler.task_prefixes  # type: ignore[attr-defined]
        return {name: prefix.state_counts.get("memory", 0) for name, prefix in prefixes.items()}

    return dict(client.run_on_scheduler(count))


def test_dedupe_on_a_dask_cluster_ends_as_on_this_machine(cluster: Client, crawled: Layout) -> None:
    layout = crawled
    here = Layout(layout.data_dir.parent / f"{layout.data_dir.name}-here")
    shutil.copytree(layout.data_dir, here.data_dir)

    dedupe(DedupeConfig(), here)
    _flow("dedupe_flow", layout, cluster)

    ran = _tasks_run(cluster)
    hashed = sum(n for name, n in ran.items() if "hash_chunk" in name)
    assert hashed >= TASKS, ran  # the photos were hashed in chunks, each a task on the cluster
    assert _curation(layout) == _curation(here)


def test_a_crawl_whose_photos_download_on_a_dask_cluster_ends_as_here(
    cluster: Client, shop: DemoShop, layout: Layout, crawled_state: Path
) -> None:
    config = json.dumps(crawl_config(shop).__dict__)
    _flow("crawl_flow", layout, cluster, f"crawl=from_mapping(CrawlConfig, __import__('json').loads({config!r}))")
    here = Layout(crawled_state, database_url=None)  # the same shop crawled in one process
    downloaded = sum(n for name, n in _tasks_run(cluster).items() if "download_remotely" in name)
    assert crawled(layout) == crawled(here)
    assert downloaded == len(crawled(here)["sources"]) > 100  # each photo was a task on the cluster
    files = sorted(p.name for p in layout.store_dir.rglob("*.*"))
    assert files == sorted(p.name for p in here.store_dir.rglob("*.*"))


def test_training_whose_features_are_extracted_on_a_dask_cluster_trains_the_same_model(
    cluster: Client, deduped: Layout
) -> None:
    layout = deduped
    with open_manifest(layout) as m:  # every kept photo accepted, as if annotators said so
        run(
            m,
            "INSERT INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
            "SELECT sha256, 1, ROW_NUMBER() OVER (ORDER BY sha256), ?, 'accept', ? FROM curation WHERE is_kept = 1",
            (utc_now(), utc_now()),
        )
    here = Layout(layout.data_dir.parent / f"{layout.data_dir.name}-here")
    shutil.copytree(layout.data_dir, here.data_dir)
    config = TrainConfig(mode="quick", members=("efficientnet_lite0",), image_size=64, batch_size=16, head_epochs=20)

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler.address))  # type: ignore[union-attr]
    def train_on_the_cluster() -> Path:
        return train(config, layout, extract=cluster_extractor())

    there = Ensemble.load(train_on_the_cluster())
    mine = Ensemble.load(train(config, here))
    # Every feature was extracted by the cluster's workers, none by this process.
    shards = list((layout.cache_dir / "features").rglob("*.sha"))
    assert shards and all(not s.stem.endswith(f"-{os.getpid()}") for s in shards)
    assert any(s.stem.endswith(f"-{os.getpid()}") for s in (here.cache_dir / "features").rglob("*.sha"))
    head = mine.members[0].member.head
    for a, b in zip(
        mine.members[0].model.get_submodule(head).parameters(),
        there.members[0].model.get_submodule(head).parameters(),
        strict=True,
    ):
        assert torch.allclose(a, b, atol=1e-5)
