"""The demo's scripted annotator: answers tasks from the generator's ground truth.

It works through Label Studio's API exactly as a person's browser does: one annotation per
task, a box drawn where the product is and the "several products" choice when there are two.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.progress import Bar
from curation.labeling.client import LabelStudioClient
from curation.labeling.shapes import NONE_OF_THESE, PRODUCT_CHOICE, box_region, choice_region, objects_region
from demo.shop.generate import PhotoTruth, load_catalog, load_truth


def answer(truth: PhotoTruth) -> list[dict[str, Any]]:
    """The annotation a careful person gives this photo."""
    x0, y0, x1, y1 = truth.bbox
    w, h = truth.width, truth.height
    box = box_region((x0 / w, y0 / h, x1 / w, y1 / h), size=(w, h))
    return [box, objects_region(truth.n_objects)]


def photo_id(data: dict[str, Any]) -> str:
    """The generator's name of a task's photo (a catalog photo is named by its product's id)."""
    return str(data["photo_url"]).rsplit("/", 1)[-1].removesuffix(".jpg")


def _answer_each(
    client: LabelStudioClient, tasks: Iterable[tuple[int, dict[str, Any]]], shop_dir: Path, desc: str
) -> int:
    truth = load_truth(shop_dir)
    listed = list(tasks)
    with Bar(len(listed), desc, unit="task") as bar:
        for task_id, data in listed:
            client.annotate(task_id, answer(truth[photo_id(data)]))
            bar.update(1)
    return len(listed)


def annotate_all(client: LabelStudioClient, project_id: int, shop_dir: Path) -> int:
    """Answers every unanswered task of the project; returns how many."""
    return _answer_each(client, client.unannotated(project_id), shop_dir, "the annotator answers")


def answer_again(client: LabelStudioClient, project_id: int, shop_dir: Path) -> int:
    """As a second annotator, answers every task that asks for one more person; returns how many."""
    return _answer_each(client, client.short_of_answers(project_id), shop_dir, "the second annotator answers")


def product_of(truth: dict[str, PhotoTruth], photo: str, catalog: frozenset[str] = frozenset()) -> str:
    """The product a photo really shows: a cross post shows its original's product, and the
    catalog photo of a product in `catalog` (named by its product's id) that product."""
    if photo in catalog:
        return photo
    t = truth[photo]
    return str(truth[t.duplicate_of].product_id if t.kind == "cross" and t.duplicate_of else t.product_id)


def choose_all(client: LabelStudioClient, project_id: int, shop_dir: Path) -> int:
    """Answers every unanswered product-choice task with the product the photo shows; returns how many."""
    truth = load_truth(shop_dir)
    catalog = frozenset(str(p.product_id) for p in load_catalog(shop_dir))
    listed = list(client.unannotated(project_id))
    with Bar(len(listed), "the annotator chooses products", unit="task") as bar:
        for task_id, data in listed:
            shown = product_of(truth, photo_id(data), catalog)
            label = next((k for k, v in data["product_ids"].items() if v == shown), NONE_OF_THESE)
            client.annotate(task_id, [choice_region(PRODUCT_CHOICE, label)])
            bar.update(1)
    return len(listed)
