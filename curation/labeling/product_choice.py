"""A person chooses the product of a photo posted under several products.

Dedupe flags such a photo ambiguous and keeps it out of training (curation/dedupe/grouping.py).
Here it goes to its own Label Studio project, with every product it was posted under as a
choice and "none of these"; the answer comes back to the manifest's product_choices table. A
chosen photo then goes through the rules like any other (curation/labeling/rule_tasks.py),
under the chosen product, and trains as that product (the manifest's usable_photos view).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core import queries as q
from core.layout import Layout
from core.manifest import Manifest, open_manifest, utc_now
from core.photos import find_damaged, photo_path
from core.settings import LabelConfig
from curation.labeling.client import LabelStudioClient
from curation.labeling.exchange import new_answers, push_tasks
from curation.labeling.shapes import CHOICE_VIEW, choice_task, chosen_product, image_ref

log = logging.getLogger(__name__)


def _candidates(manifest: Manifest, group_id: str) -> dict[str, str]:
    """{choice shown: product id} for every product a photo of the group was posted under."""
    return {f"{r['name']} ({r['product_id']})": str(r["product_id"]) for r in manifest.rows(q.GROUP_PRODUCTS, group_id)}


def push_choices(config: LabelConfig, layout: Layout, client: LabelStudioClient, root: Path) -> int:
    """Creates a choice task for each ambiguous photo without one; returns how many."""
    with open_manifest(layout) as manifest:
        unchosen = manifest.rows(q.UNCHOSEN_PHOTOS)
        damaged = find_damaged(manifest, layout, unchosen)
        rows = {r["sha256"]: r for r in unchosen if r["sha256"] not in damaged}
        if not rows:
            return 0
        project_id = client.ensure_project(config.choice_project_title, layout.store_dir, CHOICE_VIEW)

        def build(missing: list[str]) -> list[dict[str, Any]]:
            return [
                {
                    "data": choice_task(
                        image_ref(photo_path(layout, sha, rows[sha]["path"]), root),
                        sha,
                        rows[sha]["photo_url"],
                        _candidates(manifest, rows[sha]["group_id"]),
                    )
                }
                for sha in missing
            ]

        return push_tasks(client, manifest, project_id, q.NOTE_CHOICE_TASK, list(rows), build)


def pull_choices(config: LabelConfig, layout: Layout, client: LabelStudioClient) -> int:
    """Records every new or changed answer of the choice project; returns how many."""
    with open_manifest(layout) as manifest:
        if not manifest.scalar(q.COUNT_PRODUCT_CHOICES):
            return 0
        # Found, not set up: a pull runs on every answer saved, and push made the project.
        project_id = client.project_id(config.choice_project_title)
        if project_id is None:
            log.warning("no project %r in Label Studio: run label push", config.choice_project_title)
            return 0
        answers = new_answers(client, manifest, project_id, q.CHOICE_ANNOTATION)
        for done in answers.new:
            product = None if done.cancelled else chosen_product(done.result, done.data.get("product_ids") or {})
            manifest.write(q.SAVE_CHOICE, done.annotation_id, product, utc_now(), done.data["sha256"])
            log.info("photo %s: %s", done.data["sha256"], f"product {product}" if product else "no product fits")
        return len(answers.new)
