"""Every Label Studio JSON shape reviewlens speaks: the two views, tasks, predictions, answers.

Label Studio's formats: https://labelstud.io/guide/task_format and /guide/export#Label-Studio-JSON-format.
A region's box is in percent of the image; reviewlens keeps boxes as fractions of the frame
(left, top, right, bottom), and only this module converts between the two.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from core.boxes import Box, area
from core.errors import quoted

# The names the views give their controls, and the values of their choices.
PRODUCT_BOX = "product"
OBJECTS = "objects"
ONE = "one product"
SEVERAL = "several products"
PRODUCT_CHOICE = "product_id"
MACHINE_NOTE = "machine"  # what the machine found, in words: never read back as a decision
YOUR_BOX = "your_box"  # the box being drawn, measured as it is drawn: never read back as a decision
NONE_OF_THESE = "none of these"

# Reasons a person may reject a photo for beyond the two rules; hotkeys 3.. in the view.
REJECT_REASON = "reject_reason"
REJECT_REASONS = (
    "not the product named",
    "product cut off or hidden",
    "not a photo of the product",
    "too blurred or dark",
)
FIRST_REASON_KEY = 3


def rules_view(min_coverage: float, header: str = "Review photo posted under") -> str:
    """The labeling view of the two rules: the review photo on the left; on the right the rules
    and their hotkeys, the product as the shop shows it ($product_photo: its catalog photo or a
    photo a person accepted), the choices, and the machine's findings in words.

    With Label Studio's Auto-Annotation on, the machine's box (a dynamic region) and every box
    drawn with the smart box tool are sent to the connected ML backend whenever they are drawn,
    moved or resized; it answers with the box's share of the photo in the YOUR_BOX note, tied to
    the rules text: an object that takes such answers without asking the person. (`smartOnly`
    would need no switch, but then the label's hotkey selects no tool: no box could be drawn.)"""
    keyed = enumerate(REJECT_REASONS, start=FIRST_REASON_KEY)
    reasons = "\n".join(f'      <Choice value="{reason}" hotkey="{n}"/>' for n, reason in keyed)
    last_key = FIRST_REASON_KEY + len(REJECT_REASONS) - 1
    rules = (
        f"Rules: the box you draw decides: the product must cover at least {min_coverage:.0%} of the photo "
        "(B, then drag; the machine's box is a start; with Auto-Annotation on and Auto-Accept off, a box's "
        "share shows as you move it or draw it with the smart box tool). One product only: 1 one, 2 several. "
        f"Another reason to reject: {FIRST_REASON_KEY}-{last_key}. Submit: Ctrl+Enter."
    )
    return f"""<View>
  <View style="display:flex; gap:12px; align-items:flex-start">
    <View style="flex:3; min-width:0">
      <Header value="{header}: $product" size="5"/>
      <Image name="image" value="$image" zoom="true" maxHeight="75vh"/>
    </View>
    <View style="flex:1; min-width:120px">
      <Header value="The product as sold" size="6"/>
      <Image name="product_photo" value="$product_photo"/>
    </View>
    <View style="flex:2; min-width:280px">
      <Text name="rules" value="{rules}"/>
      <TextArea name="{MACHINE_NOTE}" toName="image" editable="false" rows="1" maxSubmissions="1"
                placeholder="What the machine found appears here"/>
      <TextArea name="{YOUR_BOX}" toName="rules" editable="false" rows="1" maxSubmissions="1"
                placeholder="Auto-Annotation on: a box's share of the photo appears here as you draw it"/>
      <RectangleLabels name="{PRODUCT_BOX}" toName="image" strokeWidth="3" smart="true">
        <Label value="product" background="#e6194b" hotkey="b"/>
      </RectangleLabels>
      <Choices name="{OBJECTS}" toName="image" choice="single" showInline="true" required="true">
        <Choice value="{ONE}" hotkey="1"/>
        <Choice value="{SEVERAL}" hotkey="2"/>
      </Choices>
      <Header value="Reject for another reason (optional)" size="6"/>
      <Choices name="{REJECT_REASON}" toName="image" choice="single">
{reasons}
      </Choices>
    </View>
  </View>
</View>"""


# The second view: a photo posted under several products, and which of them it shows. The
# choices come from each task's $candidates, so one project serves every such photo.
CHOICE_VIEW = f"""<View>
  <Header value="This photo was posted under several products. Which one does it show?"/>
  <Image name="image" value="$image" zoom="true"/>
  <Choices name="{PRODUCT_CHOICE}" toName="image" value="$candidates" choice="single" required="true"/>
</View>"""


# The data manager's columns a person does not sort or filter by: hidden in reviewlens' tabs.
HIDDEN_COLUMNS = [
    "tasks:inner_id", "tasks:annotations_results", "tasks:annotations_ids", "tasks:predictions_results",
    "tasks:predictions_model_versions", "tasks:file_upload", "tasks:storage_filename", "tasks:created_at",
    "tasks:updated_at", "tasks:updated_by", "tasks:draft_exists", "tasks:cancelled_annotations",
    "tasks:total_predictions", "tasks:data.product_photo", "tasks:data.product_id", "tasks:data.product_url",
    "tasks:data.photo_url", "tasks:data.sha256",
]  # fmt: skip
VERDICTS = ("unsure", "pass", "fail")


def verdict_tabs() -> list[dict[str, Any]]:
    """The data manager's tabs of the rules project: every task, then one per machine verdict, each
    with the least sure first (the prediction's score) and the useful columns alone."""

    def tab(title: str, verdict: str | None) -> dict[str, Any]:
        items = [
            {"filter": "filter:tasks:data.machine_verdict", "operator": "equal", "type": "String", "value": verdict}
        ]
        return {
            "title": title,
            "ordering": ["tasks:predictions_score"],
            "hiddenColumns": {"explore": HIDDEN_COLUMNS, "labeling": HIDDEN_COLUMNS},
            "filters": {"conjunction": "and", "items": items if verdict else []},
        }

    return [tab("All, hardest first", None)] + [tab(f"Machine: {v}", v) for v in VERDICTS]


def image_ref(photo: Path, document_root: Path) -> str:
    """The task's $image: the photo served by Label Studio's local-files storage."""
    return f"/data/local-files/?d={photo.resolve().relative_to(document_root).as_posix()}"


def box_region(
    box: Box, score: float | None = None, size: tuple[int, int] | None = None, live: bool = False
) -> dict[str, Any]:
    """A product box as a region of the rules view; `size` is the photo's (width, height) if known.
    A `live` box (the machine's, for a person to correct) is measured again whenever it is moved
    or resized, as a box the person drew is: Label Studio calls such a region dynamic."""
    region: dict[str, Any] = {
        "from_name": PRODUCT_BOX,
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {
            "x": 100 * box[0],
            "y": 100 * box[1],
            "width": 100 * (box[2] - box[0]),
            "height": 100 * (box[3] - box[1]),
            "rotation": 0,
            "rectanglelabels": ["product"],
        },
    }
    if score is not None:
        region["score"] = score
    if size is not None:
        region["original_width"], region["original_height"] = size
    if live:
        region["dynamic"] = True
    return region


def choice_region(control: str, choice: str) -> dict[str, Any]:
    """One choice made in the control named `control`."""
    return {"from_name": control, "to_name": "image", "type": "choices", "value": {"choices": [choice]}}


def note_region(lines: list[str]) -> dict[str, Any]:
    """The machine's findings in words, one line each, in the rules view's note."""
    return {"from_name": MACHINE_NOTE, "to_name": "image", "type": "textarea", "value": {"text": lines}}


def your_box_region(lines: list[str]) -> dict[str, Any]:
    """The measure of the box being drawn, in words, in the rules view's YOUR_BOX note."""
    return {"from_name": YOUR_BOX, "to_name": "rules", "type": "textarea", "value": {"text": lines}}


def objects_region(n_objects: int) -> dict[str, Any]:
    """The rules view's answer to "how many products": one, or several."""
    return choice_region(OBJECTS, SEVERAL if n_objects > 1 else ONE)


def prediction(boxes: list[tuple[Box, float]], n_objects: int, model_version: str, score: float) -> dict[str, Any]:
    """A pre-annotation of the rules view: the boxes found, with their scores, and the object count.
    `score` is how sure the machine is of the photo's verdict: Label Studio's uncertainty sampling
    serves the lowest first."""
    result = [box_region(box, s, live=True) for box, s in boxes]
    if boxes:
        result.append(objects_region(n_objects))
    return {"model_version": model_version, "score": score, "result": result}


def rules_task(
    image: str,
    sha256: str,
    product: dict[str, str],
    photo_url: str,
    verdict: str,
    doubt: str = "",
    product_photo: str = "",
) -> dict[str, Any]:
    """A task of the rules project; `product` holds the product's id, name and url, `doubt` what an
    unsure machine doubts, `product_photo` the product as the shop shows it ("" when none is known).
    The data manager shows the fields in this order: the ones a person sorts and filters by first."""
    return {
        "image": image,
        "product": product["name"],
        "machine_verdict": verdict,
        "machine_doubt": doubt,
        "product_photo": product_photo,
        "product_id": product["product_id"],
        "product_url": product["url"],
        "photo_url": photo_url,
        "sha256": sha256,
    }


def choice_task(image: str, sha256: str, photo_url: str, products: dict[str, str]) -> dict[str, Any]:
    """A task of the "which product" project; `products` maps each choice shown to its product id."""
    return {
        "image": image,
        "sha256": sha256,
        "photo_url": photo_url,
        "candidates": [{"value": v} for v in [*products, NONE_OF_THESE]],
        "product_ids": products,
    }


def malformed(result: object) -> str | None:
    """Why an answer's result is not one the rules can read (what a person's browser sends, or
    anyone with a token: a box with a non-numeric coordinate, a choice missing or not in the view),
    or None when it is."""
    if not isinstance(result, list):
        return "the result is not a list of regions"
    allowed = {OBJECTS: {ONE, SEVERAL}, REJECT_REASON: set(REJECT_REASONS)}
    for n, region in enumerate(result):
        value = region.get("value") if isinstance(region, dict) else None
        if not isinstance(value, dict):
            return f"region {n} has no value"
        if region.get("type") == "rectanglelabels":
            numbers = [value.get(k) for k in ("x", "y", "width", "height")]
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
                return f"box {n}: x, y, width and height must be finite numbers, not {quoted(numbers, 80)}"
            if value["width"] < 0 or value["height"] < 0:
                return f"box {n} has a negative width or height"
        elif region.get("type") == "choices":
            chosen = value.get("choices")
            if not isinstance(chosen, list) or not chosen or not all(isinstance(c, str) for c in chosen):
                return f"choice {n} ({quoted(region.get('from_name'), 40)}) names no choice"
            if (known := allowed.get(str(region.get("from_name")))) is not None and not set(chosen) <= known:
                return f"choice {n} names a choice the view does not offer: {quoted(chosen, 80)}"
    return None


def boxes_in(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The box values (in percent) of an answer's rectangles, in the order drawn."""
    return [r["value"] for r in result if r.get("type") == "rectanglelabels"]


def choices_in(result: list[dict[str, Any]], control: str | None = None) -> list[str]:
    """The choices an answer made, in `control` alone when named."""
    return [
        c
        for r in result
        if r.get("type") == "choices" and (control is None or r.get("from_name") == control)
        for c in r.get("value", {}).get("choices") or []
    ]


def box_of(value: dict[str, Any]) -> Box | None:
    """A drawn box (in percent) as fractions of the frame, clipped to it; None when it has no area."""
    left, top = max(0.0, value["x"] / 100), max(0.0, value["y"] / 100)
    right = min(1.0, (value["x"] + value["width"]) / 100)
    bottom = min(1.0, (value["y"] + value["height"]) / 100)
    return (left, top, right, bottom) if right > left and bottom > top else None


def box_coverage(value: dict[str, Any]) -> float:
    """The share of the photo a box covers (its value is in percent of width and height); a box
    drawn past the frame's edge counts the part inside it."""
    box = box_of(value)
    return 0.0 if box is None else round(area(box), 4)


def chosen_product(result: list[dict[str, Any]], product_ids: dict[str, str]) -> str | None:
    """The product id a person chose, or None for "none of these" or no choice."""
    chosen = choices_in(result, PRODUCT_CHOICE)
    return product_ids.get(chosen[0]) if chosen else None
