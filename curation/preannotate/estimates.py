"""Automatic estimates of the two rules, to order and pre-fill labeling.

Two sources: the COCO detector, which knows a few kinds of furniture and decor, and the
co-localiser (curation/preannotate/colocalise.py), which finds the object a product's review photos share
whatever its kind. Where the co-localiser has the photo, its box gives the coverage; a second
confident COCO object fails the one-product rule, while a product region whose halves look
differently like the product (its split) makes that rule unsure.

A verdict is 'pass', 'fail' or 'unsure'. Only confident findings count, and a coverage near
the 50% line is left to a person: the machine answers where it is likely right and sends the
rest, first, to annotators. tests/benchmarks/rules_agreement.py measures how often it is right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types alone: the label pull reads verdicts without loading the networks
    from curation.preannotate.colocalise import Location
    from models.coco_detector import Detection

# The values below were chosen on real photos composed into known cases and the demo's photos
# (tests/benchmarks/rules_agreement_real.py, on half of the products; the other half reports).
# A detection at least this confident is believed; weaker ones only make a verdict unsure (COCO's
# weaker boxes on shop photos are often a second view of the same product, not a second product).
SURE_SCORE = 0.8
# Coverage this far either side of the rule's line is decided by the machine.
COVERAGE_MARGIN = 0.03
# The co-localiser's one object passes the one-product rule only from min_coverage + this.
ALONE_MARGIN = 0.15
# A product region split at least this much holds a second product: the one-product rule fails.
# On the real photos no split did better than leaving the rule unsure: a split alone never fails.
SPLIT_FAILS = math.inf


@dataclass(frozen=True)
class Thresholds:
    """Where the machine's findings become sure verdicts (tests/benchmarks/rules_agreement_real.py tunes them)."""

    sure_score: float = SURE_SCORE
    coverage_margin: float = COVERAGE_MARGIN
    # The co-localiser's one object passes the one-product rule from min_coverage + this: a
    # product that leaves much of the frame free may share it with one folded into the background.
    alone_margin: float = ALONE_MARGIN
    # From this split of the co-localised region (one side like the product, the other not), the
    # second object fails the rule; below it, it only makes the rule unsure.
    split_fails: float = SPLIT_FAILS


@dataclass(frozen=True)
class RuleEstimate:
    coverage: float | None  # share of the photo the product's box covers
    n_objects: int  # confident objects found
    confidence: float  # 0..1: the best detection's score, or how far the coverage is from the line
    coverage_verdict: str
    objects_verdict: str
    box: tuple[float, float, float, float] | None = None  # the product's, as fractions of the frame

    @property
    def verdict(self) -> str:
        """The photo's verdict on both rules together."""
        return photo_verdict(self.coverage_verdict, self.objects_verdict)


def queue_score(verdict: str, confidence: float) -> float:
    """How sure the machine is of a photo's verdict, 0..1, in the order a person should see photos:
    every unsure photo below every decided one, the least confident first within each."""
    return round(confidence / 2 if verdict == "unsure" else 0.5 + confidence / 2, 4)


def photo_verdict(coverage_verdict: str, objects_verdict: str) -> str:
    """One failed rule fails the photo; otherwise one unsure rule leaves it to a person."""
    rules = (coverage_verdict, objects_verdict)
    return "fail" if "fail" in rules else "unsure" if "unsure" in rules else "pass"


# COCO's kinds a shop does not sell: the hand that holds the product, the cat on the sofa. They
# are neither the product nor a second one.
NOT_PRODUCTS = frozenset(
    {"person", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}
)


def _area(d: Detection) -> float:
    return (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])


def estimate(
    detections: list[Detection],
    min_coverage: float = 0.5,
    located: Location | None = None,
    thresholds: Thresholds = Thresholds(),
) -> RuleEstimate:
    """Estimates coverage and object count of one photo from its detections and its location."""
    t = thresholds
    detections = [d for d in detections if d.label not in NOT_PRODUCTS]
    sure = [d for d in detections if d.score >= t.sure_score]
    top = max((d.score for d in detections), default=0.0)
    if located is not None and located.n_objects:
        coverage = located.coverage
        confidence = round(min(1.0, abs(coverage - min_coverage) / min_coverage), 4)
        if len(sure) > 1 or located.split >= t.split_fails:
            objects_verdict = "fail"
        elif located.n_objects == 1 and coverage >= min_coverage + t.alone_margin:
            objects_verdict = "pass"
        else:
            # A product that leaves much of the frame free may share it with one the
            # co-localiser folded into the background: a person looks.
            objects_verdict = "unsure"
        n_objects = max(located.n_objects, len(sure))
        verdict = _coverage_verdict(coverage, min_coverage, t.coverage_margin)
        # What each confident object's own box says of the coverage.
        seen = {_coverage_verdict(_area(d), min_coverage, t.coverage_margin) for d in sure}
        if verdict == "fail" and "pass" in seen:
            # A confident object larger than the line around a box below it: the co-localiser
            # may have found a part the product's photos share (a label, a logo), not all of it.
            verdict = "unsure"
        elif verdict == "pass" and seen == {"fail"}:
            # The other way round: every confident object is smaller than the line while the
            # co-localised box passes it: that box may hold the product's surroundings too.
            verdict = "unsure"
        return RuleEstimate(coverage, n_objects, confidence, verdict, objects_verdict, located.box)
    if not sure:
        return RuleEstimate(None, 0, top, "unsure", "unsure")
    main = max(sure, key=_area)
    coverage = round(_area(main), 4)
    weak = len(detections) - len(sure)
    objects_verdict = "fail" if len(sure) > 1 else "unsure" if weak else "pass"
    verdict = _coverage_verdict(coverage, min_coverage, t.coverage_margin)
    return RuleEstimate(coverage, len(sure), top, verdict, objects_verdict, main.box)


def _coverage_verdict(coverage: float, min_coverage: float, margin: float) -> str:
    if coverage >= min_coverage + margin:
        return "pass"
    if coverage < min_coverage - margin:
        return "fail"
    return "unsure"
