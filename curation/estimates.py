"""Automatic estimates of the two rules from the COCO detector, to order and pre-fill labeling.

A verdict is 'pass', 'fail' or 'unsure'. Only confident detections count, and a coverage near
the 50% line is left to a person: the machine answers where it is likely right and sends the
rest, first, to annotators. tests/benchmarks/rules_agreement.py measures how often it is right.
"""

from __future__ import annotations

from dataclasses import dataclass

from curation.detector import Detection

# A detection at least this confident is believed; weaker ones only make a verdict unsure.
SURE_SCORE = 0.6
# Coverage this far either side of the rule's line is decided by the machine.
COVERAGE_MARGIN = 0.1


@dataclass(frozen=True)
class RuleEstimate:
    coverage: float | None  # share of the photo the main detection's box covers
    n_objects: int  # confident detections
    confidence: float  # the best detection's score, 0 when none
    coverage_verdict: str
    objects_verdict: str

    @property
    def unsure(self) -> bool:
        return "unsure" in (self.coverage_verdict, self.objects_verdict)

    @property
    def verdict(self) -> str:
        """The photo's verdict on both rules together."""
        if "fail" in (self.coverage_verdict, self.objects_verdict):
            return "fail"
        return "unsure" if self.unsure else "pass"


def _area(d: Detection) -> float:
    return (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])


def estimate(detections: list[Detection], min_coverage: float = 0.5) -> RuleEstimate:
    """Estimates coverage and object count of one photo from its detections."""
    sure = [d for d in detections if d.score >= SURE_SCORE]
    top = max((d.score for d in detections), default=0.0)
    if not sure:
        return RuleEstimate(None, 0, top, "unsure", "unsure")
    coverage = round(max(_area(d) for d in sure), 4)
    if coverage >= min_coverage + COVERAGE_MARGIN:
        coverage_verdict = "pass"
    elif coverage < min_coverage - COVERAGE_MARGIN:
        coverage_verdict = "fail"
    else:
        coverage_verdict = "unsure"
    weak = len(detections) - len(sure)
    objects_verdict = "fail" if len(sure) > 1 else "unsure" if weak else "pass"
    return RuleEstimate(coverage, len(sure), top, coverage_verdict, objects_verdict)
