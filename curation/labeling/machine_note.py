"""The machine's findings on one photo, in the words an annotator reads beside it.

A verdict's confidence is told as it was earned: how often people agreed with that verdict on
the photos they decided so far (the labeling report's agreement), not as a model's raw score.
"""

from __future__ import annotations

from curation.labeling.report import VerdictAgreement
from curation.preannotate.estimates import photo_verdict

RULE_NAMES = (("coverage", "the box's coverage"), ("objects", "the product count"))


def doubt(coverage_verdict: str, objects_verdict: str) -> str:
    """What an unsure machine doubts, in words ("" when it is sure of both rules)."""
    verdicts = {"coverage": coverage_verdict, "objects": objects_verdict}
    return " and ".join(name for rule, name in RULE_NAMES if verdicts[rule] == "unsure")


def track_record(verdict: str, record: VerdictAgreement | None) -> str:
    """How far a sure verdict has held with people so far."""
    shown = verdict.upper()
    if record is None or record.agreement is None:
        return f"no person has checked its {shown} verdicts yet"
    return f"people agreed with its {shown} on {record.agreement:.0%} of {record.decided} photos so far"


def estimate_lines(
    coverage: float | None,
    n_objects: int,
    coverage_verdict: str,
    objects_verdict: str,
    min_coverage: float,
    record: VerdictAgreement | None = None,
) -> list[str]:
    """The verdict, what it doubts or how far it has held, and what it measured."""
    verdict = photo_verdict(coverage_verdict, objects_verdict)
    if verdict == "unsure":
        head = f"Machine: UNSURE, it doubts {doubt(coverage_verdict, objects_verdict)}: you decide."
    else:
        head = f"Machine: {verdict.upper()}; {track_record(verdict, record)}."
    found = (
        "no product found: draw its box"
        if coverage is None
        else f"its box covers {coverage:.0%} (at least {min_coverage:.0%} asked)"
    )
    count = "none found" if n_objects == 0 else "one" if n_objects == 1 else f"{n_objects}"
    return [head, f"Coverage: {found}, {coverage_verdict}. Products: {count}, {objects_verdict}."]
