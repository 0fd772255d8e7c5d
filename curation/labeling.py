"""Label push and pull: unique photos out to Label Studio as pre-annotated tasks, decisions back.

Both are idempotent: a photo is one task however often push runs (tasks are matched by the
photo's hash, also after a push killed between Label Studio and the manifest), and pull
rewrites a decision only when its annotation changed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.colocalise import LOCALISER_VERSION, CoLocaliser, Location
from curation.detector import MODEL_VERSION, Detection, Detector
from curation.estimates import RuleEstimate, estimate
from curation.labelstudio import LabelStudioClient
from curation.product_choice import pull_choices, push_choices
from curation.rules import SEVERAL, decide
from reviewlens.manifest import Manifest, utc_now
from reviewlens.settings import LabelConfig, Layout

log = logging.getLogger(__name__)
BATCH = 100


@dataclass
class PushSummary:
    project_id: int
    pushed: int = 0
    already: int = 0
    project_url: str = ""
    choices: int = 0  # photos posted under several products, sent for a person to choose

    def __str__(self) -> str:
        return (
            f"{self.pushed} tasks pushed, {self.already} already in project {self.project_id} ({self.project_url}); "
            f"{self.choices} photos posted under several products sent to choose their product"
        )


@dataclass
class PullSummary:
    project_id: int
    decided: int = 0
    accepted: int = 0
    rejected: int = 0
    unchanged: int = 0
    chosen: int = 0  # new answers on which product a photo shows

    def __str__(self) -> str:
        return (
            f"{self.decided} new decisions ({self.accepted} accepted, {self.rejected} rejected), "
            f"{self.unchanged} unchanged, project {self.project_id}; {self.chosen} products chosen"
        )


def document_root(layout: Layout) -> Path:
    """The folder Label Studio serves local files from: its own setting, else the data folder."""
    return Path(os.environ.get("LOCAL_FILES_DOCUMENT_ROOT") or layout.data_dir).resolve()


def prediction(
    detections: list[Detection], located: Location | None = None, guess: RuleEstimate | None = None
) -> dict[str, Any]:
    """Turns the machine's findings into a Label Studio pre-annotation of the project's view.

    With a location, the annotator starts from the product's box and the machine's object
    count; without, from the detector's boxes.
    """
    boxes = [(d.box, d.score) for d in detections]
    n_objects = len(detections)
    version = MODEL_VERSION
    if located is not None and located.n_objects and guess is not None:
        boxes, n_objects, version = [(located.box, guess.confidence)], guess.n_objects, _version(located)
    result: list[dict[str, Any]] = [
        {
            "from_name": "product",
            "to_name": "image",
            "type": "rectanglelabels",
            "score": score,
            "value": {
                "x": 100 * box[0],
                "y": 100 * box[1],
                "width": 100 * (box[2] - box[0]),
                "height": 100 * (box[3] - box[1]),
                "rotation": 0,
                "rectanglelabels": ["product"],
            },
        }
        for box, score in boxes
    ]
    if boxes:
        choice = SEVERAL if n_objects > 1 else "one product"
        result.append({"from_name": "objects", "to_name": "image", "type": "choices", "value": {"choices": [choice]}})
    return {"model_version": version, "score": max((s for _, s in boxes), default=0.0), "result": result}


def _version(located: Location | None) -> str:
    return MODEL_VERSION if located is None else f"{MODEL_VERSION}+{LOCALISER_VERSION}"


def _save_estimate(manifest: Manifest, sha256: str, e: RuleEstimate, located: Location | None) -> None:
    with manifest.transaction() as db:
        db.execute(
            "INSERT OR REPLACE INTO estimates (sha256, coverage, n_objects, confidence, coverage_verdict, "
            "objects_verdict, model_version, box) VALUES (?,?,?,?,?,?,?,?)",
            (
                sha256,
                e.coverage,
                e.n_objects,
                e.confidence,
                e.coverage_verdict,
                e.objects_verdict,
                _version(located),
                None if e.box is None else ",".join(f"{v:.4f}" for v in e.box),
            ),
        )


def _locate(manifest: Manifest, layout: Layout, localiser: CoLocaliser, rows: list[Any]) -> dict[str, Location]:
    """Locations of the photos in `rows`, each product co-localised over all its usable photos."""
    located: dict[str, Location] = {}
    for shop, product_id in sorted({(r["shop"], r["product_id"]) for r in rows}):
        photos = manifest.conn.execute(
            "SELECT sha256, path FROM usable_photos WHERE shop = ? AND product_id = ? ORDER BY sha256",
            (shop, product_id),
        ).fetchall()
        found = localiser.locate([layout.store_dir / p["path"] for p in photos])
        if found is None:
            log.info("%s %s: %d photos are too few to co-localise; the detector alone guesses", shop, product_id,
                     len(photos))  # fmt: skip
            continue
        located.update(zip((p["sha256"] for p in photos), found, strict=True))
    return located


def _candidates(manifest: Manifest) -> list[Any]:
    return manifest.conn.execute(
        """
        SELECT u.sha256, u.path, u.photo_url, u.shop, pr.product_id, pr.name, pr.url
        FROM usable_photos u
        JOIN products pr ON pr.shop = u.shop AND pr.product_id = u.product_id
        LEFT JOIN labels l ON l.sha256 = u.sha256
        WHERE l.sha256 IS NULL
        ORDER BY u.review_created_at DESC, u.sha256
        """
    ).fetchall()


def push(
    config: LabelConfig,
    layout: Layout,
    client: LabelStudioClient,
    detector: Detector | None = None,
    localiser: CoLocaliser | None = None,
) -> PushSummary:
    """Creates a pre-annotated task for each kept photo not yet pushed; returns counts."""
    detector = detector or Detector(config.detector_min_score)
    localiser = localiser or CoLocaliser()
    root = document_root(layout)
    project_id = client.ensure_project(config.project_title, layout.store_dir)
    summary = PushSummary(project_id, project_url=client.project_url(project_id))
    summary.choices = push_choices(config, layout, client, root)
    with Manifest(layout.manifest_path) as manifest:
        rows = _candidates(manifest)
        existing = client.task_ids_by_key(project_id, "sha256")
        new = [r for r in rows if r["sha256"] not in existing]
        located = _locate(manifest, layout, localiser, new)
        tasks = []
        for r in new:
            path = (layout.store_dir / r["path"]).resolve()
            detections = detector.detect_file(path)
            where = located.get(r["sha256"])
            guess = estimate(detections, config.min_coverage, where)
            _save_estimate(manifest, r["sha256"], guess, where)
            task = {
                "data": {
                    "image": f"/data/local-files/?d={path.relative_to(root).as_posix()}",
                    "sha256": r["sha256"],
                    "product": r["name"],
                    "product_id": r["product_id"],
                    "product_url": r["url"],
                    "photo_url": r["photo_url"],
                    "machine_verdict": guess.verdict,
                },
                "predictions": [prediction(detections, where, guess)],
            }
            tasks.append((guess.verdict == "unsure", -guess.confidence, task))
        # Annotators see tasks in the order they were created: photos the machine cannot decide
        # come first, then the ones it decided, least confident first.
        tasks.sort(key=lambda t: (not t[0], -t[1]))
        for start in range(0, len(tasks), BATCH):
            client.import_tasks(project_id, [t[2] for t in tasks[start : start + BATCH]])
        summary.pushed = len(tasks)
        if new or rows:
            existing = client.task_ids_by_key(project_id, "sha256")
        manifest.record_pushed(
            "labels", project_id, {r["sha256"]: existing[r["sha256"]] for r in rows if r["sha256"] in existing}
        )
        summary.already = manifest.count("labels", "project_id = ?", project_id) - summary.pushed
    return summary


def pull(config: LabelConfig, layout: Layout, client: LabelStudioClient) -> PullSummary:
    """Applies the rules to every answered task and records accept or reject with the reason."""
    project_id = client.ensure_project(config.project_title, layout.store_dir)
    summary = PullSummary(project_id)
    summary.chosen = pull_choices(config, layout, client)
    with Manifest(layout.manifest_path) as manifest:
        for done in client.completed(project_id):
            sha = done.data.get("sha256")
            row = manifest.conn.execute("SELECT annotation_id FROM labels WHERE sha256=?", (sha,)).fetchone()
            if row is None:
                log.warning("task %s is not in the manifest (pushed from elsewhere?): skipped", done.task_id)
                continue
            if row["annotation_id"] == done.annotation_id:
                summary.unchanged += 1
                continue
            d = decide(done.result, done.cancelled, config.min_coverage)
            with manifest.transaction() as db:
                db.execute(
                    "UPDATE labels SET annotation_id=?, decision=?, reason=?, coverage=?, n_objects=?, decided_at=? "
                    "WHERE sha256=?",
                    (done.annotation_id, d.decision, d.reason, d.coverage, d.n_objects, utc_now(), sha),
                )
            summary.decided += 1
            summary.accepted += d.decision == "accept"
            summary.rejected += d.decision == "reject"
    return summary
