"""The model in production, live in Label Studio: `reviewlens ml-backend` connected to the rules
project of the test run's real Label Studio. A task opened without predictions is answered by it;
a promotion bumps the version, and the open tasks are asked about again in batches."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import LabelConfig, TrainConfig
from curation.labeling import client as client_module
from curation.labeling.client import LabelStudioClient, connect
from curation.labeling.shapes import MACHINE_NOTE, PRODUCT_BOX, box_region, your_box_region
from curation.labeling.sync import connect_backend, predict_again, push
from curation.preannotate.estimates import photo_verdict, queue_score
from reviewlens.cli import main
from reviewlens.labelstudio_server import LabelStudioServer
from reviewlens.ml_backend import look_up
from search.indexing import update_index
from tests.conftest import with_locations
from tests.db import run
from tests.procs import backend_login, ml_backend
from training.bundle import Ensemble
from training.evaluate import promote
from training.train import train

SMALL = {"members": ("efficientnet_lite0",), "image_size": 64, "batch_size": 16, "head_epochs": 20}


@dataclass
class Connected:
    layout: Layout
    label: LabelConfig
    client: LabelStudioClient
    project: int
    backend: str
    http: requests.Session  # with the backend's login
    log: Path
    names: set[str]  # the products' names


def _backend_lines(log: Path, version: str) -> list[int]:
    """How many tasks each /predict answered with model `version`, in order."""
    pattern = re.compile(rf"predicted (\d+) tasks with model {re.escape(version)}$")
    return [int(m.group(1)) for line in log.read_text().splitlines() if (m := pattern.search(line))]


@pytest.fixture(scope="module")
def connected(
    label_studio: LabelStudioServer,
    deduped_state: Path,
    product_locations: list[Any],
    document_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Connected]:
    # Under the root Label Studio serves photos from.
    layout = Layout(document_root / "ml-backend", database_url=None)
    shutil.copytree(deduped_state, layout.data_dir)
    with_locations(layout, product_locations)
    label = LabelConfig(project_title=f"backend {layout.data_dir.name}")
    client = connect()
    push(label, layout, client)
    with open_manifest(layout) as m:
        # Decisions recorded as a pull would (no answer in Label Studio): every task stays open.
        run(m, "UPDATE labels SET decision = 'accept', decided_at = ?", (utc_now(),))
        names = {r[0] for r in run(m, "SELECT name FROM products")}
        project = int(run(m, "SELECT project_id FROM labels LIMIT 1").fetchone()[0])
    promote(train(TrainConfig(mode="quick", **SMALL), layout), layout)  # type: ignore[arg-type]
    # Indexed, as the retrain flow does after a promotion: the backend answers as `predict` does.
    update_index(layout, Ensemble.load(layout.production_dir))
    log = tmp_path_factory.mktemp("ml-backend") / "backend.log"
    with ml_backend(layout.data_dir, log) as url, requests.Session() as http:
        http.auth = backend_login(layout.data_dir)
        yield Connected(layout, label, client, project, url, http, log, names)


def test_a_task_opened_without_predictions_gets_the_production_models_answer(
    connected: Connected, capsys: pytest.CaptureFixture[str]
) -> None:
    c = connected
    production = Ensemble.load(c.layout.production_dir).version
    assert c.http.get(f"{c.backend}/health", timeout=10).json()["model_version"] == production
    assert connect_backend(c.label, c.layout, c.client, c.backend) == production
    assert connect_backend(c.label, c.layout, c.client, c.backend) == production  # connected once, not twice
    (backend,) = c.client.sdk.ml.list(project=c.project)
    assert backend.is_interactive  # the labeling view sends it the boxes as they are drawn
    # A backend connected before it answered boxes as they are drawn is made interactive, not added again.
    user, secret = backend_login(c.layout.data_dir)
    login = {"auth_method": "BASIC_AUTH", "basic_auth_user": user, "basic_auth_pass": secret}
    c.client.sdk.ml.update(id=backend.id, url=c.backend, project=c.project, is_interactive=False, **login)  # type: ignore[arg-type]
    assert not c.client.sdk.ml.get(id=backend.id).is_interactive
    connect_backend(c.label, c.layout, c.client, c.backend)
    assert [b.is_interactive for b in c.client.sdk.ml.list(project=c.project)] == [True]
    # Label Studio calls it with its login, and its webhook carries it: nobody else gets an answer.
    assert c.client.sdk.ml.get(id=backend.id).auth_method == "BASIC_AUTH"
    (hook,) = [h for h in c.client.sdk.webhooks.list(project=str(c.project)) if h.url == f"{c.backend}/webhook"]
    assert hook.headers == {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}
    for path in ("/setup", "/predict", "/webhook"):
        assert requests.post(f"{c.backend}{path}", json={"tasks": []}, timeout=10).status_code == 401
    assert requests.get(f"{c.backend}/health", timeout=10).status_code == 401

    with open_manifest(c.layout) as m:
        row = run(
            m,
            "SELECT l.task_id, e.box, l.sha256 FROM labels l JOIN estimates e USING (sha256) "
            "WHERE e.box IS NOT NULL LIMIT 1",
        ).fetchone()
        photo = look_up(m, c.layout, row[2]).path
    task_id = int(row[0])
    for kept in c.client.predictions(task_id):  # the push's pre-annotation, made before any model
        c.client.sdk.predictions.delete(id=kept["id"])
    opened = c.client.open_task(task_id)
    predictions = c.client.predictions(task_id)
    assert [p["model_version"] for p in predictions] == [production]
    assert opened["predictions"] and opened["predictions"][0]["model_version"] == production
    result = predictions[0]["result"]
    box = next(r for r in result if r["from_name"] == PRODUCT_BOX)["value"]
    left, top, right, bottom = (float(v) for v in row[1].split(","))
    assert (box["x"], box["y"]) == (pytest.approx(100 * left), pytest.approx(100 * top))
    assert (box["width"], box["height"]) == (pytest.approx(100 * (right - left)), pytest.approx(100 * (bottom - top)))
    note = next(r for r in result if r["from_name"] == MACHINE_NOTE)["value"]["text"]
    # The verdict and what it doubts, or its record with people: none yet, as no person decided.
    assert note[0].startswith("Machine: ") and ("you decide" in note[0] or "no person has checked" in note[0])
    assert any(line.startswith("Coverage: its box covers ") for line in note)
    said = next(line for line in note if line.startswith(f"Model {production}: 1. "))
    named = re.findall(r"\d\. (.+?) \((0\.\d\d|1\.00)\)", said)
    assert len(named) == 3 and {name for name, _ in named} <= c.names
    assert _backend_lines(c.log, production) == [1]
    # The annotator is told the products a shopper is: `reviewlens predict`'s first object's.
    assert photo is not None and main(["predict", str(photo), "--json", "--data-dir", str(c.layout.data_dir)]) == 0
    (predicted,) = json.loads(capsys.readouterr().out)
    first = predicted["objects"][0]["products"]
    assert [name for name, _ in named] == [p["name"] for p in first]
    assert [float(score) for _, score in named] == [pytest.approx(p["score"], abs=0.006) for p in first]


def test_a_promotion_asks_again_about_every_open_task_in_batches(
    connected: Connected, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = connected
    first = Ensemble.load(c.layout.production_dir).version
    connect_backend(c.label, c.layout, c.client, c.backend)
    promote(train(TrainConfig(mode="quick", seed=1, **SMALL), c.layout), c.layout)  # type: ignore[arg-type]
    second = Ensemble.load(c.layout.production_dir).version
    assert second != first
    monkeypatch.setattr(client_module, "PREDICT_BATCH", 7)
    with open_manifest(c.layout) as m:
        tasks = [r[0] for r in run(m, "SELECT task_id FROM labels WHERE project_id = ?", (c.project,))]
        answered = int(run(m, "SELECT task_id FROM labels LIMIT 1").fetchone()[0])
        run(m, "UPDATE labels SET annotation_id = 1 WHERE task_id = ?", (answered,))  # one task answered
    asked = predict_again(c.label, c.layout, c.client)
    assert asked == len(tasks) - 1
    for task_id in tasks:
        versions = [p["model_version"] for p in c.client.predictions(task_id)]
        assert (second in versions) == (task_id != answered)
    batches = _backend_lines(c.log, second)
    assert sum(batches) == asked and max(batches) <= 7 and len(batches) == -(-asked // 7)
    assert c.client.sdk.projects.get(id=c.project).model_version == second
    # Asked again with nothing new: Label Studio skips tasks that hold the version's prediction.
    predict_again(c.label, c.layout, c.client)
    assert sum(_backend_lines(c.log, second)) == asked


def test_the_backend_answers_a_bad_request_with_a_reason(connected: Connected) -> None:
    c = connected
    nested: object = {"sha256": "0" * 64}
    for _ in range(40):
        nested = {"inner": nested}
    hostile = {
        b"not json": (400, "not JSON"),
        b"\xff\xfe{}": (400, "not JSON"),
        b"[" * 200_000: (400, "not JSON"),
        json.dumps({"tasks": [{"data": nested}]}).encode(): (400, "nested deeper than 32"),
        b'{"tasks": "all"}': (400, "list of tasks"),
        b'{"tasks": [1, 2]}': (400, "each task must be an object"),
        b'{"tasks": [{"data": "x"}]}': (400, "each task must be an object"),
        json.dumps({"tasks": [{"data": {}}] * 201}).encode(): (413, "at most 200"),
        b" " * 2_000_001: (413, "at most 2,000,000"),
    }
    for body, (status, said) in hostile.items():
        bad = c.http.post(f"{c.backend}/predict", data=body, timeout=30)
        assert (bad.status_code, said in bad.json()["error"]) == (status, True), bad.text
    for event in (b"[]", b'{"action": "ANNOTATION_CREATED", "project": {"id": "abc"}}', b'{"project": 5}'):
        assert c.http.post(f"{c.backend}/webhook", data=event, timeout=10).status_code == 400
    assert c.http.post(f"{c.backend}/predict", json={"tasks": [], "params": "x"}, timeout=10).json()["results"] == []
    stranger = c.http.post(
        f"{c.backend}/predict", json={"tasks": [{"id": 1, "data": {"sha256": "0" * 64}}]}, timeout=30
    )
    note = stranger.json()["results"][0]["result"][0]["value"]["text"]
    assert note == ["This photo is not in reviewlens' manifest."]
    assert c.http.post(f"{c.backend}/setup", json={"project": "1.0"}, timeout=10).json()["model_version"]


def test_a_box_as_it_is_drawn_is_measured_at_once_without_the_model(connected: Connected) -> None:
    c = connected
    before = sum(_backend_lines(c.log, Ensemble.load(c.layout.production_dir).version))
    # Label Studio's interactive call: the task, and the boxes on the photo as its context.
    drawn = [box_region((0.1, 0.1, 0.6, 0.8), live=True), box_region((0.0, 0.0, 0.2, 0.2))]
    asked = {"tasks": [{"id": 1, "data": {"sha256": "0" * 64}}], "params": {"context": {"result": drawn[:1]}}}
    (answer,) = c.http.post(f"{c.backend}/predict", json=asked, timeout=10).json()["results"]
    said = "Your box covers 35% of the photo: under 50%, so it would be rejected."
    assert answer["result"] == [your_box_region([said])]
    asked["params"] = {"context": {"result": drawn}}
    (answer,) = c.http.post(f"{c.backend}/predict", json=asked, timeout=10).json()["results"]
    assert answer["result"][0]["value"]["text"][0].startswith("2 boxes on the photo")
    assert sum(_backend_lines(c.log, Ensemble.load(c.layout.production_dir).version)) == before


def _served(c: Connected, n: int) -> list[int]:
    """The next `n` tasks Label Studio's queue serves the annotator, each skipped to move on."""
    served = []
    for _ in range(n):
        token = {"Authorization": f"Token {os.environ['LABEL_STUDIO_API_KEY']}"}
        response = requests.get(f"{c.client.url}/api/projects/{c.project}/next", headers=token, timeout=60)
        task_id = int(response.json()["id"])
        served.append(task_id)
        c.client.annotate(task_id, [], cancelled=True)
    return served


def test_the_queue_serves_the_hardest_photos_first_in_either_sampling(connected: Connected) -> None:
    c = connected
    connect_backend(c.label, c.layout, c.client, c.backend)
    predict_again(c.label, c.layout, c.client)  # every open task holds the production model's answer
    with open_manifest(c.layout) as m:
        rows = run(
            m,
            "SELECT l.task_id, e.coverage_verdict, e.objects_verdict, e.confidence FROM labels l "
            "JOIN estimates e USING (sha256) WHERE l.project_id = ?",
            (c.project,),
        ).fetchall()
    score = {int(r[0]): queue_score(photo_verdict(r[1], r[2]), r[3]) for r in rows}
    assert min(score.values()) < 0.5 < max(score.values())  # unsure photos and decided ones

    # Sequence sampling, Label Studio's default: the order the push created the tasks in.
    first = _served(c, 8)
    assert [score[t] for t in first] == sorted(score[t] for t in first)
    assert score[first[0]] == min(score.values())

    # Uncertainty sampling: the lowest score of the model version shown, whatever the creation order.
    c.client.sdk.projects.update(id=c.project, sampling="Uncertainty sampling")
    left = {t: s for t, s in score.items() if t not in first}
    then = _served(c, 8)
    assert [score[t] for t in then] == sorted(left.values())[:8]

    # Each answer saved reached the backend's /webhook as Label Studio posts it (a Prefect server
    # turns it into a pull: tests/test_deployments.py); with none configured it says so.
    told = f"event ANNOTATION_CREATED of project {c.project}: no Prefect server to tell"
    deadline = time.monotonic() + 30
    while c.log.read_text().count(told) < len(first + then) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert c.log.read_text().count(told) == len(first + then)
