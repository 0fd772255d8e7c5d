"""Label Studio killed in the middle of a push and of a pull: the next run leaves exactly one task
per photo and loses no decision. The server is the test run's real one, killed with SIGKILL at a
known request by a proxy in front of it (tests/killer_proxy.py), and started again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import LabelConfig
from curation.labeling import client as client_module
from curation.labeling.client import LabelStudioClient, LabelStudioError, connect
from curation.labeling.pull import pull
from curation.labeling.rules import decide
from curation.labeling.shapes import rules_view
from curation.labeling.sync import push
from demo.shop.annotator import answer, photo_id
from demo.shop.generate import load_truth
from reviewlens.labelstudio_server import LabelStudioServer
from tests.conftest import leave_to_label
from tests.db import run
from tests.killer_proxy import killer_proxy, nth


@pytest.fixture
def revived(label_studio: LabelStudioServer) -> Iterator[LabelStudioServer]:
    """The test run's Label Studio, started again after the test whatever happened in it."""
    yield label_studio
    if not label_studio.is_up():
        label_studio.start()


# Both engines: the only run of the push's and the pull's writes on PostgreSQL.
@pytest.mark.both_engines
def test_killed_mid_push_and_mid_pull_the_next_run_is_exact(
    revived: LabelStudioServer, shop_dir: Path, located: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = located
    assert leave_to_label(layout, 6) > 30  # four import requests of ten: the third is cut
    # One annotator answers: no task is asked of two (tests/test_overlap.py).
    label = LabelConfig(project_title=f"faults {layout.data_dir.name}", overlap=0.0)
    token = os.environ["LABEL_STUDIO_API_KEY"]
    direct = connect()
    project = direct.ensure_project(label.project_title, layout.store_dir, rules_view(0.5))
    monkeypatch.setattr(client_module, "IMPORT_BATCH", 10)  # several requests, so one can be cut

    # Killed at the third request creating the rules project's tasks: two batches are in.
    cut = nth(3, "POST", f"/api/projects/{project}/import")
    with killer_proxy(revived, cut) as url, pytest.raises(LabelStudioError, match="does not answer") as failed:
        push(label, layout, connect(url, token))
    assert token not in str(failed.value) and not revived.answers()
    revived.start()
    before = len(direct.task_ids_by_key(project, "sha256"))
    summary = push(label, layout, connect())
    tasks = direct.task_ids_by_key(project, "sha256")
    with open_manifest(layout) as m:
        noted = dict(run(m, "SELECT sha256, task_id FROM labels WHERE project_id = ?", (project,)).fetchall())
    assert before == 20 and summary.pushed == len(tasks) - before > 0
    # Exactly one task per photo: as many tasks as photos, each the one the manifest names.
    listed = direct.tasks(project)
    assert len(listed) == len(tasks) == len(noted) and noted == tasks

    # Half answered and pulled; the rest answered, then the server killed as the pull reads them.
    truth = load_truth(shop_dir)
    open_tasks = list(direct.unannotated(project))
    half = len(open_tasks) // 2
    _answer(direct, open_tasks[:half], truth)
    assert pull(label, layout, direct).decided == half
    _answer(direct, open_tasks[half:], truth)
    # (the pull has read the "which product" project by then: the rules project's answers are next)
    cut = nth(1, "GET", "/api/tasks", project=str(project), only_annotated="true")
    with killer_proxy(revived, cut) as url, pytest.raises(LabelStudioError, match="does not answer"):
        pull(label, layout, connect(url, token))
    with open_manifest(layout) as m:
        in_project = "SELECT COUNT(*) FROM labels WHERE decision IS NOT NULL AND project_id = ?"
        assert run(m, in_project, (project,)).fetchone()[0] == half
    revived.start()
    again = pull(label, layout, connect())
    assert again.decided == len(open_tasks) - half and again.unchanged <= half
    # No decision lost or changed: each is the rules' decision on the answer given.
    with open_manifest(layout) as m:
        decided = dict(run(m, "SELECT task_id, decision FROM labels WHERE project_id = ?", (project,)))
    expected = {
        task_id: decide(answer(truth[photo_id(data)]), False, label.min_coverage).decision
        for task_id, data in open_tasks
    }
    assert decided == expected


def _answer(client: LabelStudioClient, tasks: list[tuple[int, dict[str, object]]], truth: dict) -> None:  # type: ignore[type-arg]
    for task_id, data in tasks:
        client.annotate(task_id, answer(truth[photo_id(data)]))
