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
from distributed import Client, LocalCluster

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import DedupeConfig
from crawler.crawl import crawl
from curation.dedupe.grouping import dedupe
from flows.dask import TASKS
from reviewlens.demoshop.server import DemoShop
from tests.conftest import crawl_config
from tests.db import crawled, run
from tests.procs import ROOT


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


def test_dedupe_on_a_dask_cluster_ends_as_on_this_machine(
    cluster: Client, shop: DemoShop, layout: Layout, tmp_path: os.PathLike[str]
) -> None:
    crawl(crawl_config(shop), layout)
    here = Layout(layout.data_dir.parent / f"{layout.data_dir.name}-here")
    shutil.copytree(layout.data_dir, here.data_dir)

    dedupe(DedupeConfig(), here)
    _flow("dedupe_flow", layout, cluster)

    ran = _tasks_run(cluster)
    hashed = sum(n for name, n in ran.items() if "hash_chunk" in name)
    assert hashed >= TASKS, ran  # the photos were hashed in chunks, each a task on the cluster
    assert _curation(layout) == _curation(here)


def test_a_crawl_whose_photos_download_on_a_dask_cluster_ends_as_here(
    cluster: Client, shop: DemoShop, layout: Layout, tmp_path: Path
) -> None:
    config = json.dumps(crawl_config(shop).__dict__)
    _flow("crawl_flow", layout, cluster, f"crawl=from_mapping(CrawlConfig, __import__('json').loads({config!r}))")
    here = Layout(tmp_path / "here")
    crawl(crawl_config(shop), here)
    downloaded = sum(n for name, n in _tasks_run(cluster).items() if "download_remotely" in name)
    assert crawled(layout) == crawled(here)
    assert downloaded == len(crawled(here)["sources"]) > 100  # each photo was a task on the cluster
    files = sorted(p.name for p in layout.store_dir.rglob("*.*"))
    assert files == sorted(p.name for p in here.store_dir.rglob("*.*"))
