"""The review project: photos whose two annotators decided differently, decided once more.

Open-source Label Studio asks several people for a task (its overlap) but does not reconcile
their answers. reviewlens does: a photo whose annotators disagree goes to a project of its own,
with each person's answer shown as a starting point under their name; the reviewer's answer is
the decision that counts (curation/labeling/rule_answers.py: pull_rules says which counts when).
"""

from __future__ import annotations

import json
from typing import Any

from core import queries as q
from core.boxes import box_text
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import LabelConfig
from curation.labeling.client import LabelStudioClient
from curation.labeling.exchange import new_answers, push_tasks
from curation.labeling.rules import Decision, MalformedAnswer, decide
from curation.labeling.shapes import MACHINE_NOTE, note_region, rules_view

REVIEW_HEADER = "Its annotators decided this photo differently: your decision counts. Photo"


def review_view(config: LabelConfig) -> str:
    return rules_view(config.min_coverage, header=REVIEW_HEADER)


def person_prediction(answer: Any) -> dict[str, Any]:
    """One annotator's answer as a starting point the reviewer can take, named after them."""
    result = [r for r in json.loads(answer["result"]) if r.get("from_name") != MACHINE_NOTE]
    said = f"{answer['annotator']}: {answer['decision']} ({answer['reason']})"
    return {"model_version": f"answer of {answer['annotator']}", "score": 0.0, "result": [*result, note_region([said])]}


def push_reviews(config: LabelConfig, layout: Layout, client: LabelStudioClient) -> int:
    """Creates a review task for each disputed photo without one; returns how many."""
    with open_manifest(layout) as manifest:
        disputed = {r["sha256"]: int(r["task_id"]) for r in manifest.rows(q.UNREVIEWED_DISPUTES)}
        if not disputed:
            return 0
        project_id = client.ensure_project(config.review_project_title, layout.store_dir, review_view(config))

        def build(missing: list[str]) -> list[dict[str, Any]]:
            # The rules task's own data: the same photo, product and product photo.
            return [
                {
                    "data": client.task_data(disputed[sha]),
                    "predictions": [person_prediction(a) for a in manifest.rows(q.ANSWERS_OF, sha)],
                }
                for sha in missing
            ]

        return push_tasks(client, manifest, project_id, q.NOTE_REVIEW_TASK, list(disputed), build)


def pull_reviews(config: LabelConfig, layout: Layout, client: LabelStudioClient) -> list[Decision]:
    """Records the reviewers' decisions as the ones that count; returns them."""
    decisions: list[Decision] = []
    with open_manifest(layout) as manifest:
        if not manifest.scalar(q.COUNT_REVIEWS):
            return decisions
        # Found, not set up: a pull runs on every answer saved, and push_reviews made the project.
        project_id = client.project_id(config.review_project_title)
        if project_id is None:
            return decisions
        for done in new_answers(client, manifest, project_id, q.REVIEW_ANNOTATION).new:
            sha, now = done.data["sha256"], utc_now()
            try:
                d = decide(done.result, done.cancelled, config.min_coverage)
            except MalformedAnswer as exc:  # the photo stays in review until the answer is corrected
                manifest.write(q.SAVE_BAD_ANSWER, sha, done.annotator, done.annotation_id, now, str(exc), now)
                continue
            with manifest.transaction() as db:
                db.run(q.SAVE_REVIEW, done.annotation_id, now, sha)
                db.run(
                    q.SAVE_DECISION,
                    done.annotation_id, d.decision, d.reason, d.coverage, d.n_objects, now,
                    None if d.box is None else box_text(d.box), done.annotator or None, done.lead_time, sha,
                )  # fmt: skip
            decisions.append(d)
    return decisions
