"""One push and one pull for any Label Studio project: tasks out by photo hash, new answers back.

Both are idempotent. A photo is one task however often push runs: tasks are matched by the
photo's hash, also after a push killed between Label Studio and the manifest. Pull hands on an
answer only when its annotation is not the one the manifest recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.manifest import Manifest, utc_now
from core.queries import Query
from curation.labeling.client import Completed, LabelStudioClient

log = logging.getLogger(__name__)
KEY = "sha256"  # the task data field that names the photo


def push_tasks(
    client: LabelStudioClient,
    manifest: Manifest,
    project_id: int,
    note_task: Query,
    pending: list[str],
    build: Callable[[list[str]], list[dict[str, Any]]],
) -> int:
    """Creates tasks for the `pending` photos the project lacks and notes each photo's task.

    `build` makes the tasks of the photos it is given, in the order annotators should see
    them; `note_task` records (photo, project, task, time) without touching a recorded one.
    Returns how many tasks were created.
    """
    existing = client.task_ids_by_key(project_id, KEY)
    tasks = build([sha for sha in pending if sha not in existing])
    client.import_tasks(project_id, tasks)
    if tasks:
        existing = client.task_ids_by_key(project_id, KEY)
    now = utc_now()
    with manifest.transaction() as db:
        db.run_many(note_task, [(sha, project_id, existing[sha], now) for sha in pending if sha in existing])
    return len(tasks)


@dataclass
class Answers:
    new: list[Completed] = field(default_factory=list)
    unchanged: int = 0


def new_answers(client: LabelStudioClient, manifest: Manifest, project_id: int, annotation_of: Query) -> Answers:
    """The project's answered tasks whose latest annotation the manifest has not recorded yet."""
    answers = Answers()
    for done in client.completed(project_id):
        row = manifest.row(annotation_of, done.data.get(KEY))
        if row is None:
            log.warning("task %s is not in the manifest (pushed from elsewhere?): skipped", done.task_id)
        elif row["annotation_id"] == done.annotation_id:
            answers.unchanged += 1
        else:
            answers.new.append(done)
    return answers
