"""A person chooses the product of a photo posted under several products.

Dedupe flags such a photo ambiguous and keeps it out of training (curation/dedupe.py). Here it
goes to its own Label Studio project, with every product it was posted under as a choice and
"none of these"; the answer comes back to the manifest's product_choices table. A chosen
photo then goes through the rules like any other (curation/labeling.py), under the chosen
product, and trains as that product (training/data.py). Push and pull are idempotent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from curation.labelstudio import CHOICE_CONFIG, LabelStudioClient
from reviewlens.manifest import Manifest, utc_now
from reviewlens.settings import LabelConfig, Layout

log = logging.getLogger(__name__)
NONE_OF_THESE = "none of these"


def _undecided(manifest: Manifest) -> list[Any]:
    """Kept photos of ambiguous groups that have no choice task yet."""
    return manifest.conn.execute(
        """
        SELECT c.sha256, c.group_id, p.path, s.photo_url
        FROM curation c JOIN photos p USING (sha256)
        JOIN sources s ON s.sha256 = c.sha256
            AND s.rowid = (SELECT MIN(rowid) FROM sources WHERE sha256 = c.sha256)
        LEFT JOIN product_choices pc ON pc.sha256 = c.sha256
        WHERE c.status = 'ok' AND c.is_kept = 1 AND c.is_ambiguous = 1 AND pc.sha256 IS NULL
        ORDER BY c.sha256
        """
    ).fetchall()


def _candidates(manifest: Manifest, group_id: str) -> dict[str, str]:
    """{choice shown: product id} for every product a photo of the group was posted under."""
    rows = manifest.conn.execute(
        """
        SELECT DISTINCT pr.product_id, pr.name FROM curation c
        JOIN sources s ON s.sha256 = c.sha256
        JOIN products pr ON pr.shop = s.shop AND pr.product_id = s.product_id
        WHERE c.group_id = ? ORDER BY pr.product_id
        """,
        (group_id,),
    ).fetchall()
    return {f"{r['name']} ({r['product_id']})": str(r["product_id"]) for r in rows}


def push_choices(config: LabelConfig, layout: Layout, client: LabelStudioClient, root: Path) -> int:
    """Creates a choice task for each ambiguous photo without one; returns how many."""
    with Manifest(layout.manifest_path) as manifest:
        rows = _undecided(manifest)
        if not rows:
            return 0
        project_id = client.ensure_project(config.choice_project_title, layout.store_dir, CHOICE_CONFIG)
        existing = client.task_ids_by_key(project_id, "sha256")
        tasks = []
        for r in rows:
            if r["sha256"] in existing:
                continue  # pushed by a run killed before it wrote the manifest
            choices = _candidates(manifest, r["group_id"])
            path = (layout.store_dir / r["path"]).resolve()
            tasks.append(
                {
                    "data": {
                        "image": f"/data/local-files/?d={path.relative_to(root).as_posix()}",
                        "sha256": r["sha256"],
                        "photo_url": r["photo_url"],
                        "candidates": [{"value": v} for v in [*choices, NONE_OF_THESE]],
                        "product_ids": choices,
                    }
                }
            )
        client.import_tasks(project_id, tasks)
        existing = client.task_ids_by_key(project_id, "sha256")
        manifest.record_pushed(
            "product_choices", project_id, {r["sha256"]: existing[r["sha256"]] for r in rows if r["sha256"] in existing}
        )
        return len(tasks)


def chosen_product(result: list[dict[str, Any]], product_ids: dict[str, str]) -> str | None:
    """The product id a person chose, or None for "none of these" or no choice."""
    for r in result:
        if r.get("from_name") == "product_id":
            choices = r.get("value", {}).get("choices") or []
            return product_ids.get(choices[0]) if choices else None
    return None


def pull_choices(config: LabelConfig, layout: Layout, client: LabelStudioClient) -> int:
    """Records every new or changed answer of the choice project; returns how many."""
    with Manifest(layout.manifest_path) as manifest:
        if not manifest.count("product_choices"):
            return 0
        project_id = client.ensure_project(config.choice_project_title, layout.store_dir, CHOICE_CONFIG)
        decided = 0
        for done in client.completed(project_id):
            sha = done.data.get("sha256")
            row = manifest.conn.execute("SELECT annotation_id FROM product_choices WHERE sha256=?", (sha,)).fetchone()
            if row is None or row["annotation_id"] == done.annotation_id:
                continue
            product = None if done.cancelled else chosen_product(done.result, done.data.get("product_ids") or {})
            with manifest.transaction() as db:
                db.execute(
                    "UPDATE product_choices SET annotation_id=?, product_id=?, decided_at=? WHERE sha256=?",
                    (done.annotation_id, product, utc_now(), sha),
                )
            decided += 1
            log.info("photo %s: %s", sha, f"product {product}" if product else "no product fits")
        return decided
