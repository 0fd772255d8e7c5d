"""The rules project's answers back: every person's answer kept, and the decision that counts.

Which decision counts: a task one person is asked for, theirs; a task two are asked for (the
overlap), theirs once both answered and agree; when they differ, the reviewer's
(curation/labeling/review.py), and until then none. It loads no network: a pull started by an
answer saved begins in seconds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core import queries as q
from core.boxes import box_text
from core.layout import Layout
from core.manifest import Manifest, open_manifest, utc_now
from core.settings import LabelConfig
from curation.labeling.client import Answer, LabelStudioClient
from curation.labeling.exchange import KEY
from curation.labeling.rules import Decision, MalformedAnswer, decide

log = logging.getLogger(__name__)
# An incremental read goes back this far before the newest change the last pull read: an answer
# whose transaction committed after that read, with an earlier time, is still found.
MARK_OVERLAP = timedelta(minutes=1)


@dataclass
class RulesPulled:
    decisions: list[Decision] = field(default_factory=list)  # decisions that now count
    unchanged: int = 0  # answered tasks with nothing new
    waiting: int = 0  # tasks two people are asked for, answered by one so far
    malformed: int = 0  # answers the rules cannot read, kept as bad_answers rows


def _seen(manifest: Manifest, sha256: str, answer: Answer) -> bool:
    """Whether this answer, as it stands, is recorded (an answer changed in place is not)."""
    row = manifest.row(q.ANSWER_SEEN, sha256, answer.annotator)
    if row is None:  # recorded before answers were kept one per person: by its annotation alone
        label = manifest.row(q.LABEL_ANNOTATION, sha256)
        return label is not None and label["annotation_id"] == answer.annotation_id
    return bool(row["annotation_id"] == answer.annotation_id and row["updated_at"] == answer.updated_at)


def changed_after(mark: str | None) -> str | None:
    """Where an incremental read starts: MARK_OVERLAP before the last complete pull's newest change."""
    if mark is None:
        return None
    return (datetime.fromisoformat(mark) - MARK_OVERLAP).isoformat()


def pull_rules(
    config: LabelConfig, layout: Layout, client: LabelStudioClient, project_id: int, full: bool = False
) -> RulesPulled:
    """Applies the rules to every new answer, keeps it, and records the decision that counts.

    It reads the tasks changed since the last complete pull (all of them the first time, or
    with `full`): a pull started by one answer saved reads a few tasks, not the whole project.
    """
    pulled = RulesPulled()
    with open_manifest(layout) as manifest:
        mark = manifest.row(q.PULL_MARK, project_id)
        newest = None if mark is None else str(mark["updated_at"])
        since = None if full else changed_after(newest)
        for task in client.answered(project_id, since):
            newest = max(newest or task.updated_at, task.updated_at)
            sha = str(task.data.get(KEY) or "")
            if manifest.row(q.LABEL_ANNOTATION, sha) is None:
                log.warning("task %s is not in the manifest (pushed from elsewhere?): skipped", task.task_id)
                continue
            fresh = [a for a in task.answers if not _seen(manifest, sha, a)]
            if not fresh:
                pulled.unchanged += 1
                continue
            decided, unreadable = {}, []
            for a in task.answers:
                try:
                    decided[a.annotator] = decide(a.result, a.cancelled, config.min_coverage)
                except MalformedAnswer as exc:
                    unreadable.append((a, str(exc)))
            if unreadable:
                # One unreadable answer leaves its task undecided, never the pull: every other task
                # is decided, and the answer is a failure row until someone corrects it.
                for a, why in unreadable:
                    log.warning("answer %s to photo %s cannot be read: %s", a.annotation_id, sha[:12], why)
                    manifest.write(q.SAVE_BAD_ANSWER, sha, a.annotator, a.annotation_id, a.updated_at, why, utc_now())
                pulled.malformed += len(unreadable)
                continue
            manifest.write(q.FORGET_BAD_ANSWERS, sha)
            for a in fresh:
                d = decided[a.annotator]
                manifest.write(q.SAVE_ANSWER, sha, a.annotator, a.annotation_id, a.updated_at, d.decision, d.reason,
                               a.lead_time, json.dumps(a.result))  # fmt: skip
            if manifest.row(q.IS_REVIEWED, sha) is not None:
                continue  # the reviewer's decision counts; later answers are kept beside it
            if len(task.answers) < min(task.overlap, 2):
                pulled.waiting += 1
                continue
            if len({d.decision for d in decided.values()}) > 1:
                manifest.write(q.UNDECIDE, "its annotators disagree: in review", sha)
                continue
            last = task.answers[-1]
            d = decided[last.annotator]
            box = None if d.box is None else box_text(d.box)
            manifest.write(
                q.SAVE_DECISION,
                last.annotation_id, d.decision, d.reason, d.coverage, d.n_objects, utc_now(), box,
                last.annotator or None, last.lead_time, sha,
            )  # fmt: skip
            pulled.decisions.append(d)
        if newest:  # noted only once every task was read: a pull cut short reads the same again
            manifest.write(q.SAVE_PULL_MARK, project_id, newest)
    return pulled
