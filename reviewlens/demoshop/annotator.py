"""The demo's scripted annotator: answers tasks from the generator's ground truth.

It works through Label Studio's API exactly as a person's browser does: one annotation per
task, a box drawn where the product is and the "several products" choice when there are two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.labelstudio import LabelStudioClient
from curation.product_choice import NONE_OF_THESE
from curation.rules import SEVERAL
from reviewlens.demoshop.generate import PhotoTruth, load_truth


def answer(truth: PhotoTruth) -> list[dict[str, Any]]:
    """The annotation a careful person gives this photo."""
    x0, y0, x1, y1 = truth.bbox
    w, h = truth.width, truth.height
    box = {
        "from_name": "product",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": w,
        "original_height": h,
        "value": {
            "x": 100 * x0 / w,
            "y": 100 * y0 / h,
            "width": 100 * (x1 - x0) / w,
            "height": 100 * (y1 - y0) / h,
            "rotation": 0,
            "rectanglelabels": ["product"],
        },
    }
    choice = SEVERAL if truth.n_objects > 1 else "one product"
    return [box, {"from_name": "objects", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]


def annotate_all(client: LabelStudioClient, project_id: int, shop_dir: Path) -> int:
    """Answers every unanswered task of the project; returns how many."""
    truth = load_truth(shop_dir)
    done = 0
    for task_id, data in list(client.unannotated(project_id)):
        photo_id = str(data["photo_url"]).rsplit("/", 1)[-1].removesuffix(".jpg")
        client.annotate(task_id, answer(truth[photo_id]))
        done += 1
    return done


def product_of(truth: dict[str, PhotoTruth], photo_id: str) -> str:
    """The product a photo really shows: a cross post shows its original's product."""
    t = truth[photo_id]
    return str(truth[t.duplicate_of].product_id if t.kind == "cross" and t.duplicate_of else t.product_id)


def choose_all(client: LabelStudioClient, project_id: int, shop_dir: Path) -> int:
    """Answers every unanswered product-choice task with the product the photo shows; returns how many."""
    truth = load_truth(shop_dir)
    done = 0
    for task_id, data in list(client.unannotated(project_id)):
        photo_id = str(data["photo_url"]).rsplit("/", 1)[-1].removesuffix(".jpg")
        shown = product_of(truth, photo_id)
        label = next((k for k, v in data["product_ids"].items() if v == shown), NONE_OF_THESE)
        result = {"from_name": "product_id", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
        client.annotate(task_id, [result])
        done += 1
    return done
