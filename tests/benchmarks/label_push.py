"""Tasks to Label Studio in batches versus one task per request, and 10,000 answers pulled back.

A real Label Studio of its own starts in a temporary folder. The label stage's exchange
(curation/labeling/exchange.py: push_tasks, the push's own path) sends the rules project's tasks
of 10,000 photos, a hundred a request as the push does; then tasks of a sample of other photos
one per request, in the same run: the figure is the ratio of tasks per second. Then 10,000 tasks
arrive answered (each with a one-product box, imported with its annotation) and the label pull
(curation/labeling/rule_tasks.py: pull_rules) records their decisions: seconds for all of them.

Pre-annotation (the detector and the co-localiser) is left out: it is the machine's work before
the push, measured with the labeling stage's agreement, not Label Studio's. The photos' files are
not needed: a task only names its photo.

    .venv/bin/python -m tests.benchmarks.label_push [--photos 10000] [--single 300]
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path
from typing import Any

from core import queries as q
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import LabelConfig
from curation.labeling import client as client_module
from curation.labeling.client import LabelStudioClient, connect
from curation.labeling.exchange import push_tasks
from curation.labeling.rule_answers import MARK_OVERLAP, pull_rules
from curation.labeling.shapes import box_region, objects_region, rules_task, rules_view
from tests.benchmarks._shop import local_label_studio, workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized

PRODUCT = {"product_id": "1", "name": "a lamp", "url": "https://example.invalid/productions/1/selling"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def photos(layout: Layout, n: int, tag: str) -> list[str]:
    """`n` photo rows in the manifest (hashes of made-up bytes), as the crawl would store them."""
    shas = [hashlib.sha256(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]
    with open_manifest(layout, create=True) as m, m.transaction() as db:
        db.run_many(q.INSERT_PHOTO, [(s, f"{s[:2]}/{s}.jpg", "JPEG", 800, 600, 1, utc_now()) for s in shas])
    return shas


def task(sha: str, answered: bool) -> dict[str, Any]:
    data = rules_task(f"/data/local-files/?d=store/{sha[:2]}/{sha}.jpg", sha, PRODUCT, f"/photos/{sha}.jpg", "unsure")
    out: dict[str, Any] = {"data": data}
    if answered:
        out["annotations"] = [{"result": [box_region((0.1, 0.1, 0.9, 0.9)), objects_region(1)]}]
    return out


def pushed(client: LabelStudioClient, layout: Layout, title: str, shas: list[str], answered: bool = False) -> float:
    """Seconds to push the tasks of `shas` into a new project through push_tasks."""
    project = client.ensure_project(title, layout.store_dir, rules_view(0.5))
    started = time.monotonic()
    with open_manifest(layout) as m:
        push_tasks(client, m, project, q.NOTE_LABEL_TASK, shas, lambda todo: [task(s, answered) for s in todo])
    return time.monotonic() - started


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--photos", type=int, default=sized(10_000, 150))
    parser.add_argument("--single", type=int, default=sized(300, 10), help="tasks pushed one per request")
    args = parser.parse_args()
    root = workdir("label-push")
    layout = Layout(root / "data")
    layout.store_dir.mkdir(parents=True)
    server, creds = local_label_studio(root)
    try:
        client = connect(server.url, creds.token)
        batched = pushed(client, layout, "batched", photos(layout, args.photos, "batched"))
        batch = client_module.IMPORT_BATCH
        client_module.IMPORT_BATCH = 1
        single = pushed(client, layout, "one per request", photos(layout, args.single, "single"))
        client_module.IMPORT_BATCH = batch
        batched_rate, single_rate = args.photos / batched, args.single / single
        print(f"{args.photos} tasks, {batch} a request: {batched:.1f} s, {batched_rate:.0f} tasks/s")
        print(f"{args.single} tasks, one a request: {single:.1f} s, {single_rate:.1f} tasks/s")

        answered = photos(layout, args.photos, "answered")
        pushed(client, layout, "answered", answered, answered=True)
        project = client.ensure_project("answered", layout.store_dir, rules_view(0.5))
        started = time.monotonic()
        pulled = pull_rules(LabelConfig(), layout, client, project)
        decisions, unchanged = pulled.decisions, pulled.unchanged
        pull_seconds = time.monotonic() - started
        with open_manifest(layout) as m:
            recorded = m.scalar(q.LABEL_TASKS_IN_PROJECT, project)
        print(
            f"pull of {args.photos} answers: {len(decisions)} decisions recorded ({recorded} tasks noted, "
            f"{unchanged} unchanged) in {pull_seconds:.1f} s; Label Studio's folder: {Path(server.home)}"
        )
        # Answers arriving one at a time, as the event path pulls on each: a pull reads the tasks
        # changed since (and in the minute before) the newest change the last pull read. The
        # first one still finds the bulk import's changes in that minute; the next ones do not.
        task_ids = list(client.task_ids_by_key(project, "sha256").values())
        for n, task_id in enumerate(task_ids[: sized(2, 1)]):
            time.sleep(sized(1.5 * MARK_OVERLAP.total_seconds(), 0.0))
            client.annotate(task_id, [box_region((0.1, 0.1, 0.9, 0.9)), objects_region(1)])
            started = time.monotonic()
            again = pull_rules(LabelConfig(), layout, client, project)
            print(
                f"pull after answer {n + 1} more among {args.photos}: {len(again.decisions)} decision, "
                f"{again.unchanged} unchanged tasks read again, in {time.monotonic() - started:.1f} s"
            )
        print(f"label_push_batched_over_single: {batched_rate / single_rate:.1f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
