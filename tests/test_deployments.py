"""prefect.yaml on a real Prefect server: every deployment registers, and a worker runs one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from core.layout import Layout
from core.manifest import Manifest
from crawler.crawl import crawl
from reviewlens.demoshop.server import DemoShop
from tests.conftest import crawl_config, free_port
from tests.db import count

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `prefect server start` of the test's own, and the environment that points at it."""
    port = free_port()
    home = tmp_path_factory.mktemp("prefect-server")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # Schedules are registered and checked, but no run is created from them: the worker
        # below must run only the flow run the test asks for.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    }
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
        subprocess.run(
            [PREFECT, "work-pool", "create", "reviewlens", "--type", "process"], env=env, check=True, cwd=ROOT
        )
        subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], env=env, check=True, cwd=ROOT, capture_output=True)
        yield env
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _api(env: dict[str, str], path: str, body: dict[str, object] | None = None) -> object:
    return requests.post(f"{env['PREFECT_API_URL']}{path}", json=body or {}, timeout=10).json()


def test_every_stage_is_deployed_with_its_schedule(prefect_env: dict[str, str]) -> None:
    deployments = {d["name"]: d for d in _api(prefect_env, "/deployments/filter")}  # type: ignore[union-attr]
    assert set(deployments) >= {
        "reviewlens-crawl",
        "reviewlens-dedupe",
        "reviewlens-label-push",
        "reviewlens-label-pull",
        "reviewlens-retrain",
        "reviewlens-pipeline",
        "reviewlens-import",
        "reviewlens-index",
    }
    schedule = {name: [s["schedule"] for s in d["schedules"]] for name, d in deployments.items()}
    assert schedule["reviewlens-crawl"][0]["cron"] == "0 3 * * *"
    assert schedule["reviewlens-label-pull"][0]["interval"] == 600
    assert schedule["reviewlens-retrain"] == [] and schedule["reviewlens-pipeline"] == []
    assert schedule["reviewlens-import"] == []
    assert schedule["reviewlens-index"][0]["cron"] == "0 5 * * *"
    assert deployments["reviewlens-label-pull"]["parameters"]["retrain_after"] > 0


def test_a_process_worker_runs_a_deployed_stage(prefect_env: dict[str, str], shop: DemoShop, layout: Layout) -> None:
    crawl(crawl_config(shop), layout)
    subprocess.run(
        [
            PREFECT,
            "deployment",
            "run",
            "dedupe/reviewlens-dedupe",
            "--param",
            f"data_dir={json.dumps(str(layout.data_dir))}",
        ],
        env=prefect_env,
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    worker = subprocess.run(
        [PREFECT, "worker", "start", "--pool", "reviewlens", "--run-once"],
        env=prefect_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    runs = _api(prefect_env, "/flow_runs/filter")
    assert [r["state_type"] for r in runs] == ["COMPLETED"], worker.stdout[-3000:]  # type: ignore[index,union-attr]
    with Manifest(layout.manifest_path) as m:
        assert count(m, "curation") == count(m, "photos") > 0
