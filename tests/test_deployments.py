"""prefect.yaml on a real Prefect server: every deployment registers, and a worker runs one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from core.layout import Layout
from core.manifest import open_manifest
from tests.db import count
from tests.procs import PREFECT, backend_login, ml_backend, prefect_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `prefect server start` of the test's own, and the environment that points at it."""
    # Schedules are registered and checked, but no run is created from them: the worker below
    # must run only the flow run the test asks for.
    home = tmp_path_factory.mktemp("prefect-server")
    with prefect_server(home, PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false") as env:
        yield env


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


def test_a_process_worker_runs_a_deployed_stage(prefect_env: dict[str, str], crawled: Layout) -> None:
    layout = crawled
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
    with open_manifest(layout) as m:
        assert count(m, "curation") == count(m, "photos") > 0


def test_an_answer_saved_becomes_an_event_that_starts_a_label_pull(prefect_env: dict[str, str], tmp_path: Path) -> None:
    """Label Studio's webhook (its payload as it posts it) to `reviewlens ml-backend`, which tells
    Prefect; the label-pull deployment's trigger then creates a pull. Label Studio posting it is
    tested against a real Label Studio in tests/test_ml_backend.py."""
    automations = _api(prefect_env, "/automations/filter")
    pulls = [a for a in automations if "label-studio.annotation.saved" in a["trigger"].get("expect", [])]  # type: ignore[union-attr,index]
    assert len(pulls) == 1 and pulls[0]["actions"][0]["type"] == "run-deployment"  # type: ignore[index]
    deployments = {d["name"]: d["id"] for d in _api(prefect_env, "/deployments/filter")}  # type: ignore[union-attr,index]
    assert pulls[0]["actions"][0]["deployment_id"] == deployments["reviewlens-label-pull"]  # type: ignore[index]

    log = tmp_path / "backend.log"
    with ml_backend(tmp_path, log, prefect_env) as backend:

        def label_pulls() -> list[dict[str, object]]:
            runs = _api(prefect_env, "/flow_runs/filter")
            return [r for r in runs if r["deployment_id"] == deployments["reviewlens-label-pull"]]  # type: ignore[union-attr,index]

        login = backend_login(tmp_path)
        # An event that changes no decision starts nothing.
        requests.post(
            f"{backend}/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 7}}, auth=login, timeout=10
        )
        saved = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "task": {"id": 3}, "annotation": {"id": 11}}
        # Forged: without the backend's login, or with another, nothing is queued.
        for forged in ({}, {"auth": ("reviewlens", "guess")}, {"headers": {"Authorization": "Basic"}}):
            refused = requests.post(f"{backend}/webhook", json=saved, timeout=10, **forged)  # type: ignore[arg-type]
            assert refused.status_code == 401
        started = time.monotonic()
        assert requests.post(f"{backend}/webhook", json=saved, auth=login, timeout=10).json() == {"status": "ok"}
        while not label_pulls() and time.monotonic() - started < 60:
            time.sleep(0.5)
        assert len(label_pulls()) == 1, log.read_text()
        wanted = {"filter": {"event": {"name": ["label-studio.annotation.saved"]}}}
        events: list[dict[str, dict[str, object]]] = []
        while not events and time.monotonic() - started < 60:  # the server stores events a little later
            events = _api(prefect_env, "/events/filter", wanted)["events"]  # type: ignore[index,call-overload]
            time.sleep(0.5)
        [event] = events
        assert event["resource"]["prefect.resource.id"] == "label-studio.project.7"
        assert event["payload"] == {"action": "ANNOTATION_CREATED", "task": 3, "annotation": 11}
        assert requests.post(f"{backend}/webhook", data=b"not json", auth=login, timeout=10).status_code == 400
    assert len(label_pulls()) == 1  # the forged posts queued nothing


def test_pulls_that_see_one_crossing_start_one_retrain(prefect_env: dict[str, str], tmp_path: Path) -> None:
    """A label pull running deployed starts the retrain deployment; two pulls past the same
    threshold, with no newer training between them, get one and the same retrain run."""
    script = (
        "from core.settings import LabelConfig, TrainConfig\n"
        "from flows.labeling import start_retrain\n"
        f"print(start_retrain.fn({str(tmp_path)!r}, TrainConfig(), LabelConfig()))\n"
    )
    # As a flow run of a deployment sees itself (prefect.runtime reads this in tests).
    env = {**prefect_env, "PREFECT__RUNTIME__DEPLOYMENT__ID": "00000000-0000-0000-0000-000000000001"}
    said = [
        subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
        for _ in range(2)
    ]
    assert said[0] == said[1] and said[0].endswith("scheduled (retrain-after-none)")
    deployments = {d["name"]: d["id"] for d in _api(prefect_env, "/deployments/filter")}  # type: ignore[union-attr,index]
    runs = _api(prefect_env, "/flow_runs/filter")
    retrains = [r for r in runs if r["deployment_id"] == deployments["reviewlens-retrain"]]  # type: ignore[union-attr,index]
    assert len(retrains) == 1 and retrains[0]["id"] in said[0]  # type: ignore[index]
