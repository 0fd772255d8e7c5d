"""The study's two rules, applied to an annotator's answer: a decision with its reason."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.boxes import Box
from core.errors import ReviewlensError
from curation.labeling.shapes import (
    OBJECTS,
    REJECT_REASON,
    SEVERAL,
    box_coverage,
    box_of,
    boxes_in,
    choices_in,
    malformed,
)


class MalformedAnswer(ReviewlensError):
    """An answer the rules cannot read; the message says what is wrong with it."""


@dataclass(frozen=True)
class Decision:
    decision: str  # 'accept' or 'reject'
    reason: str  # why, for a person reading the manifest
    coverage: float | None  # share of the photo the product's box covers
    n_objects: int
    box: Box | None = None  # the person's box around the one product, kept as training data


def decide(result: list[dict[str, Any]], cancelled: bool, min_coverage: float) -> Decision:
    """Applies the rules to one Label Studio annotation result.

    Rules: exactly one product in the photo (one box, and not marked "several products"),
    and that product's box covers at least `min_coverage` of the photo. A reason to reject the
    person chose (the wrong product, hidden, not a photo of it) rejects it whatever the box.
    An answer the rules cannot read raises MalformedAnswer.
    """
    if cancelled:
        return Decision("reject", "skipped by the annotator", None, 0)
    if (problem := malformed(result)) is not None:
        raise MalformedAnswer(problem)
    boxes = boxes_in(result)
    several = SEVERAL in choices_in(result, OBJECTS)
    n_objects = max(len(boxes), 2 if several else min(1, len(boxes)))
    chosen_reason = choices_in(result, REJECT_REASON)
    if chosen_reason:
        coverage = box_coverage(boxes[0]) if boxes else None
        return Decision("reject", f"annotator: {chosen_reason[0]}", coverage, n_objects)
    if not boxes:
        return Decision("reject", "no product box drawn", None, n_objects)
    coverage = box_coverage(boxes[0])
    if n_objects > 1:
        return Decision("reject", f"{n_objects} products in the photo", coverage, n_objects)
    box = box_of(boxes[0])
    if coverage < min_coverage:
        reason = f"product covers {coverage:.0%} of the photo, under {min_coverage:.0%}"
        return Decision("reject", reason, coverage, 1, box)
    return Decision("accept", "one product covering enough of the photo", coverage, 1, box)


def box_words(result: list[dict[str, Any]], min_coverage: float) -> list[str]:
    """What the rules (`decide`) make of the boxes on the photo while a person draws them, in words:
    the share of the photo a single box covers against the line, or why the count already decides."""
    if (problem := malformed(result)) is not None:
        return [f"The boxes cannot be measured: {problem}."]
    if not boxes_in(result):
        return ["No box on the photo: draw one around the product (B, then drag)."]
    decision = decide(result, cancelled=False, min_coverage=min_coverage)
    if decision.n_objects > 1:
        return [
            f"{decision.n_objects} boxes on the photo: one product only, so it would be rejected. Delete all but one."
        ]
    # Whole percents rounded down: a box of 49.7% reads 49%, never "50%, under 50%".
    shown = f"{math.floor(100 * (decision.coverage or 0.0))}%"
    if decision.decision == "reject":
        return [f"Your box covers {shown} of the photo: under {min_coverage:.0%}, so it would be rejected."]
    return [f"Your box covers {shown} of the photo: at least {min_coverage:.0%}, so it passes."]
