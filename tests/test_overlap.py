"""Two annotators on a share of the tasks, on a real Label Studio: a photo waits for both answers,
their agreement decides it, a disagreement goes to the review project whose answer counts, and
the report measures each annotator against the decisions that counted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import LabelConfig
from curation.labeling import rule_answers
from curation.labeling.client import connect
from curation.labeling.pull import pull
from curation.labeling.report import labeling_report
from curation.labeling.rules import decide
from curation.labeling.shapes import objects_region
from curation.labeling.sync import push
from demo.shop.annotator import answer, photo_id
from demo.shop.generate import load_truth
from reviewlens.labelstudio_server import LabelStudioServer
from tests.conftest import leave_to_label
from tests.db import run


def _decisions(layout: Layout) -> dict[str, str | None]:
    with open_manifest(layout) as m:
        return dict(run(m, "SELECT sha256, decision FROM labels"))


def test_two_annotators_agree_or_a_reviewer_decides(
    label_studio: LabelStudioServer, shop_dir: Path, located: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = located
    leave_to_label(layout, 8)  # enough tasks for three disputes among those asked of two
    title = f"overlap {layout.data_dir.name}"
    label = LabelConfig(project_title=title, review_project_title=f"{title} review", overlap=0.5)
    admin = connect()
    project = push(label, layout, admin).project_id
    truth = load_truth(shop_dir)
    first, second, reviewer = (
        connect(api_key=label_studio.person(f"{who}@reviewlens.test").token) for who in ("first", "second", "reviewer")
    )

    tasks = {t.id: t for t in admin.tasks(project, fields="all")}
    asked_of_two = {i for i, t in tasks.items() if t.overlap == 2}
    assert len(asked_of_two) == round(len(tasks) * 0.5)  # Label Studio's cohort, as set
    right = {i: answer(truth[photo_id(t.data)]) for i, t in tasks.items()}  # type: ignore[arg-type]
    accepted = {i for i, r in right.items() if decide(r, False, label.min_coverage).decision == "accept"}
    for task_id, result in right.items():
        first.annotate(task_id, result)

    # One answer of two: the photo waits for the second.
    waiting = pull(label, layout, admin)
    assert waiting.waiting == len(asked_of_two) and waiting.decided == len(tasks) - len(asked_of_two)
    sha = {i: str(t.data["sha256"]) for i, t in tasks.items()}  # type: ignore[index]
    assert all(_decisions(layout)[sha[i]] is None for i in asked_of_two)

    # The second annotator sees "several products" in some photos the first accepted.
    short = dict(second.short_of_answers(project))
    assert set(short) == asked_of_two
    disputed = set(sorted(asked_of_two & accepted)[:3])
    assert disputed
    for task_id in short:
        result = right[task_id]
        if task_id in disputed:
            result = [r for r in result if r["type"] != "choices"] + [objects_region(2)]
        second.annotate(task_id, result)
    both = pull(label, layout, admin)
    assert (both.waiting, both.disputed) == (0, len(disputed))
    assert both.decided == len(asked_of_two) - len(disputed)
    assert all(_decisions(layout)[sha[i]] is None for i in disputed)
    assert pull(label, layout, admin).disputed == 0  # one review task per disputed photo, however often

    # The reviewer sees both answers, each under its annotator's name, and decides.
    review = admin.project_id(label.review_project_title)
    assert review is not None
    in_review = admin.tasks(review, fields="all")
    assert {t.data["sha256"] for t in in_review} == {sha[i] for i in disputed}  # type: ignore[index]
    shown = admin.predictions(int(in_review[0].id))  # type: ignore[arg-type]
    assert sorted(p["model_version"] for p in shown) == [
        "answer of first@reviewlens.test",
        "answer of second@reviewlens.test",
    ]
    by_sha = {v: k for k, v in sha.items()}
    for t in in_review:
        reviewer.annotate(int(t.id), right[by_sha[t.data["sha256"]]])  # type: ignore[arg-type,index]
    reviewed = pull(label, layout, admin)
    assert reviewed.reviewed == reviewed.decided == len(disputed)
    expected = {sha[i]: ("accept" if i in accepted else "reject") for i in tasks}
    assert {s: d for s, d in _decisions(layout).items() if s in expected} == expected
    with open_manifest(layout) as m:
        by_whom = dict(run(m, "SELECT sha256, annotator FROM labels"))
    assert {by_whom[sha[i]] for i in disputed} == {"reviewer@reviewlens.test"}

    report = labeling_report(layout)
    o = report.overlap
    assert (o.answered_by_two, o.agreed, o.in_review, o.reviewed) == (
        len(asked_of_two), len(asked_of_two) - len(disputed), 0, len(disputed),
    )  # fmt: skip
    people = {a.annotator: a for a in report.annotators}
    assert people["first@reviewlens.test"].agreement_with_final == 1.0
    assert people["second@reviewlens.test"].compared == len(asked_of_two)
    assert people["second@reviewlens.test"].agreed_final == len(asked_of_two) - len(disputed)
    assert people["first@reviewlens.test"].tasks == len(tasks)
    assert "Which decision counts" in report.markdown()

    # An answer changed in place (same annotation, saved again) is seen by the next pull.
    alone = next(i for i in sorted(accepted) if i not in asked_of_two)
    done = next(c for c in admin.completed(project) if c.task_id == alone)
    changed = [r for r in right[alone] if r["type"] != "choices"] + [objects_region(2)]
    first.sdk.annotations.update(id=done.annotation_id, result=changed)
    again = pull(label, layout, admin)
    assert again.decided == 1 and _decisions(layout)[sha[alone]] == "reject"

    # A pull reads only the tasks changed since the last complete one (here without the window it
    # reads again before that): nothing changed, nothing read; one answer changed, one task read.
    monkeypatch.setattr(rule_answers, "MARK_OVERLAP", timedelta(0))
    quiet = pull(label, layout, admin)
    assert (quiet.decided, quiet.unchanged) == (0, 0)
    other = next(i for i in sorted(accepted) if i not in asked_of_two and i != alone)
    done = next(c for c in admin.completed(project) if c.task_id == other)
    first.sdk.annotations.update(id=done.annotation_id, result=changed)
    one = pull(label, layout, admin)
    assert (one.decided, one.unchanged) == (1, 0) and _decisions(layout)[sha[other]] == "reject"
    assert pull(label, layout, admin, full=True).unchanged == len(tasks)  # every answered task, read again


def test_an_answer_the_rules_cannot_read_leaves_its_task_waiting_and_every_other_decided(
    shop_dir: Path, located: Layout
) -> None:
    layout = located
    leave_to_label(layout, 1)
    label = LabelConfig(project_title=f"bad answers {layout.data_dir.name}", overlap=0.0)
    admin = connect()
    project = push(label, layout, admin).project_id
    truth = load_truth(shop_dir)
    tasks = list(admin.unannotated(project))
    right = {task_id: answer(truth[photo_id(data)]) for task_id, data in tasks}
    # Saved through Label Studio's API as anyone with a token can: a coordinate that is no number,
    # a choice missing, a label the view does not offer.
    box = next(r for r in right[tasks[0][0]] if r["type"] == "rectanglelabels")
    hostile = [
        [{**box, "value": {**box["value"], "x": "abc"}}],
        [{"type": "choices", "from_name": "objects", "to_name": "image", "value": {"choices": []}}],
        [objects_region(1) | {"value": {"choices": ["a dozen products"]}}],
    ]
    bad = {task_id: admin.annotate(task_id, result) for (task_id, _), result in zip(tasks, hostile, strict=False)}
    for task_id, _ in tasks[len(hostile) :]:
        admin.annotate(task_id, right[task_id])

    pulled = pull(label, layout, admin)
    assert pulled.malformed == len(hostile) and pulled.decided == len(tasks) - len(hostile)
    sha = {task_id: str(data["sha256"]) for task_id, data in tasks}
    with open_manifest(layout) as m:
        failures = {r[0]: (r[1], r[2]) for r in run(m, "SELECT sha256, annotation_id, reason FROM bad_answers")}
    assert {s: a for s, (a, _) in failures.items()} == {sha[t]: a for t, a in bad.items()}
    reasons = [failures[sha[t]][1] for t in bad]
    assert "must be finite numbers" in reasons[0] and "names no choice" in reasons[1]
    assert "a choice the view does not offer" in reasons[2]
    decided = _decisions(layout)
    assert all(decided[sha[t]] is None for t in bad)
    assert all(decided[sha[t]] is not None for t, _ in tasks[len(hostile) :])

    # Corrected in place: the next pull decides it, and its failure row goes.
    corrected = next(iter(bad))
    first = connect()
    first.sdk.annotations.update(id=bad[corrected], result=right[corrected])
    again = pull(label, layout, admin, full=True)
    assert again.malformed == len(hostile) - 1 and _decisions(layout)[sha[corrected]] is not None
    with open_manifest(layout) as m:
        left = {r[0] for r in run(m, "SELECT sha256 FROM bad_answers")}
    assert left == {sha[t] for t in bad} - {sha[corrected]}
