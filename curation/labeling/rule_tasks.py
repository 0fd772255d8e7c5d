"""The rules project's push: pre-annotated tasks out, in the order a person should see them.

Each task carries the machine's findings (curation/preannotate/) as a pre-annotation and its
verdict; the photos it cannot decide come first. Their answers come back through
curation/labeling/rule_answers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core import queries as q
from core.boxes import box_text
from core.layout import Layout
from core.manifest import Manifest, open_manifest
from core.photos import find_damaged, photo_path
from core.progress import Bar
from core.settings import LabelConfig
from curation.labeling.client import LabelStudioClient
from curation.labeling.exchange import push_tasks
from curation.labeling.locations import locate_products
from curation.labeling.machine_note import doubt, estimate_lines
from curation.labeling.report import verdict_records
from curation.labeling.shapes import image_ref, note_region, prediction, rules_task
from curation.preannotate.colocalise import CoLocaliser, Location
from curation.preannotate.estimates import RuleEstimate, estimate, queue_score
from models.coco_detector import MODEL_VERSION, Detection, Detector


def machine_version(located: Location | None) -> str:
    """Which models made a pre-annotation: the detector, with what located the product where one did."""
    return MODEL_VERSION if located is None else f"{MODEL_VERSION}+{located.by}"


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
    with open_manifest(layout) as manifest:
        # A photo whose file went missing or changed since dedupe leaves the usable photos (and
        # is fetched again by the next crawl) before any of them is read.
        unusable = find_damaged(manifest, layout, manifest.rows(q.USABLE_PHOTOS))
        rows = {r["sha256"]: r for r in manifest.rows(q.UNLABELED_PHOTOS) if r["sha256"] not in unusable}

        def build(missing: list[str]) -> list[dict[str, Any]]:
            products = [(rows[sha]["shop"], rows[sha]["product_id"]) for sha in missing]
            located = locate_products(manifest, layout, localiser, products, set(unusable))
            records = verdict_records(manifest)
            references: dict[tuple[str, str], str] = {}
            ordered = []
            bar = Bar(len(missing), "pre-annotating photos for Label Studio")
            for sha in missing:
                bar.update(1)
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
            bar.close()
            ordered.sort(key=lambda t: t[0])
            return [task for _, task in ordered]

        return push_tasks(client, manifest, project_id, q.NOTE_LABEL_TASK, list(rows), build)
