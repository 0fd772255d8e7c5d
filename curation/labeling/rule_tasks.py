"""The rules project: pre-annotated tasks out, in the order a person should see them; decisions back.

Each task carries the machine's findings (curation/preannotate/) as a pre-annotation and its
verdict; the photos it cannot decide come first.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import queries as q
from core.boxes import box_text
from core.layout import Layout
from core.manifest import Manifest, utc_now
from core.photos import find_damaged, photo_path
from core.settings import LabelConfig
from curation.labeling.client import Answer, LabelStudioClient
from curation.labeling.exchange import KEY, push_tasks
from curation.labeling.machine_note import doubt, estimate_lines
from curation.labeling.report import verdict_records
from curation.labeling.rules import Decision, decide
from curation.labeling.shapes import image_ref, note_region, prediction, rules_task
from curation.preannotate.colocalise import LOCALISER_VERSION, CoLocaliser, Location
from curation.preannotate.estimates import RuleEstimate, estimate, queue_score
from models.coco_detector import MODEL_VERSION, Detection, Detector

log = logging.getLogger(__name__)


def machine_version(located: Location | None) -> str:
    """Which models made a pre-annotation: the detector, with the co-localiser where it located."""
    return MODEL_VERSION if located is None else f"{MODEL_VERSION}+{LOCALISER_VERSION}"


def machine_prediction(
    detections: list[Detection],
    located: Location | None = None,
    guess: RuleEstimate | None = None,
    note: list[str] | None = None,
) -> dict[str, Any]:
    """The machine's findings as a pre-annotation of the rules view, with `note` in its words.

    With a location, the annotator starts from the product's box and the machine's object
    count; without, from the detector's boxes.
    """
    score = 0.0 if guess is None else queue_score(guess.verdict, guess.confidence)
    if located is not None and located.n_objects and guess is not None:
        made = prediction([(located.box, guess.confidence)], guess.n_objects, machine_version(located), score)
    else:
        made = prediction([(d.box, d.score) for d in detections], len(detections), MODEL_VERSION, score)
    if note:
        made["result"].append(note_region(note))
    return made


def reference_photo(manifest: Manifest, layout: Layout, root: Path, shop: str, product_id: str) -> str:
    """The task's $product_photo: the product as the shop shows it, "" while none is known."""
    row = manifest.row(q.PRODUCT_REFERENCE_PHOTO, shop, product_id)
    return "" if row is None else image_ref(photo_path(layout, row["sha256"], row["path"]), root)


def _save_estimate(manifest: Manifest, sha256: str, e: RuleEstimate, located: Location | None) -> None:
    box = None if e.box is None else box_text(e.box)
    manifest.write(
        q.SAVE_ESTIMATE,
        sha256,
        e.coverage,
        e.n_objects,
        e.confidence,
        e.coverage_verdict,
        e.objects_verdict,
        machine_version(located),
        box,
    )


def _locate(
    manifest: Manifest, layout: Layout, localiser: CoLocaliser, rows: list[sqlite3.Row], unusable: set[str]
) -> dict[str, Location]:
    """Locations of the photos in `rows`, each product co-localised over all its usable photos."""
    located: dict[str, Location] = {}
    for shop, product_id in sorted({(r["shop"], r["product_id"]) for r in rows}):
        photos = [p for p in manifest.rows(q.PRODUCT_PHOTOS, shop, product_id) if p["sha256"] not in unusable]
        found = localiser.locate([photo_path(layout, p["sha256"], p["path"]) for p in photos])
        if found is None:
            log.info("%s %s: %d photos are too few to co-localise; the detector alone guesses", shop, product_id,
                     len(photos))  # fmt: skip
            continue
        located.update(zip((p["sha256"] for p in photos), found, strict=True))
    return located


def push_rules(
    config: LabelConfig,
    layout: Layout,
    client: LabelStudioClient,
    project_id: int,
    root: Path,
    detector: Detector,
    localiser: CoLocaliser,
) -> int:
    """Creates a pre-annotated task for each usable photo not yet pushed; returns how many."""
    with Manifest(layout.manifest_path) as manifest:
        # A photo whose file went missing or changed since dedupe leaves the usable photos (and
        # is fetched again by the next crawl) before any of them is read.
        unusable = find_damaged(manifest, layout, manifest.rows(q.USABLE_PHOTOS))
        rows = {r["sha256"]: r for r in manifest.rows(q.UNLABELED_PHOTOS) if r["sha256"] not in unusable}

        def build(missing: list[str]) -> list[dict[str, Any]]:
            located = _locate(manifest, layout, localiser, [rows[sha] for sha in missing], set(unusable))
            records = verdict_records(manifest)
            references: dict[tuple[str, str], str] = {}
            ordered = []
            for sha in missing:
                r = rows[sha]
                path = photo_path(layout, sha, r["path"])
                detections = detector.detect_file(path)
                where = located.get(sha)
                guess = estimate(detections, config.min_coverage, where)
                _save_estimate(manifest, sha, guess, where)
                key = (r["shop"], r["product_id"])
                if key not in references:
                    references[key] = reference_photo(manifest, layout, root, *key)
                note = estimate_lines(guess.coverage, guess.n_objects, guess.coverage_verdict, guess.objects_verdict,
                                      config.min_coverage, records.get(guess.verdict))  # fmt: skip
                data = rules_task(
                    image_ref(path, root), sha, dict(r), r["photo_url"], guess.verdict,
                    doubt(guess.coverage_verdict, guess.objects_verdict), references[key],
                )  # fmt: skip
                task = {"data": data, "predictions": [machine_prediction(detections, where, guess, note)]}
                ordered.append((queue_score(guess.verdict, guess.confidence), task))
            # Label Studio's default queue serves tasks in the order they were created: photos
            # the machine cannot decide first, then the ones it decided, least confident first.
            # The predictions' score holds the same order for its uncertainty sampling.
            ordered.sort(key=lambda t: t[0])
            return [task for _, task in ordered]

        return push_tasks(client, manifest, project_id, q.NOTE_LABEL_TASK, list(rows), build)


@dataclass
class RulesPulled:
    decisions: list[Decision] = field(default_factory=list)  # decisions that now count
    unchanged: int = 0  # answered tasks with nothing new
    waiting: int = 0  # tasks two people are asked for, answered by one so far
    disputed: int = 0  # photos its annotators decided differently: the review project decides


def _seen(manifest: Manifest, sha256: str, answer: Answer) -> bool:
    """Whether this answer, as it stands, is recorded (an answer changed in place is not)."""
    row = manifest.row(q.ANSWER_SEEN, sha256, answer.annotator)
    if row is None:  # recorded before answers were kept one per person: by its annotation alone
        label = manifest.row(q.LABEL_ANNOTATION, sha256)
        return label is not None and label["annotation_id"] == answer.annotation_id
    return bool(row["annotation_id"] == answer.annotation_id and row["updated_at"] == answer.updated_at)


def pull_rules(config: LabelConfig, layout: Layout, client: LabelStudioClient, project_id: int) -> RulesPulled:
    """Applies the rules to every new answer and records accept or reject with the reason.

    Which decision counts: a task one person is asked for, theirs; a task two are asked for
    (the overlap), theirs once both answered and agree; when they differ, the reviewer's
    (curation/labeling/review.py), and until then none. Every person's answer is kept.
    """
    pulled = RulesPulled()
    with Manifest(layout.manifest_path) as manifest:
        for task in client.answered(project_id):
            sha = str(task.data.get(KEY) or "")
            if manifest.row(q.LABEL_ANNOTATION, sha) is None:
                log.warning("task %s is not in the manifest (pushed from elsewhere?): skipped", task.task_id)
                continue
            fresh = [a for a in task.answers if not _seen(manifest, sha, a)]
            if not fresh:
                pulled.unchanged += 1
                continue
            decided = {a.annotator: decide(a.result, a.cancelled, config.min_coverage) for a in task.answers}
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
                pulled.disputed += 1
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
    return pulled
