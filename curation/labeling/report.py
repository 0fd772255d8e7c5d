"""What labeling did, read from the manifest alone: the funnel from crawled photos to the training
splits, how often people agreed with the machine's verdict, and each annotator's work.

The funnel says where photos are lost (invalid, duplicates, rejected and why); agreement per
verdict says how far the machine's "pass" and "fail" can be trusted, which is what decides how
many tasks people must see; per annotator: tasks done, median seconds per task (Label Studio's
lead time) and agreement with the machine where it was sure.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.layout import Layout
from core.manifest import Manifest, open_manifest
from core.queries import (
    ANNOTATOR_WORK,
    ANSWERS_AND_FINAL,
    DECIDED_WITH_ESTIMATES,
    FUNNEL,
    LABEL_FUNNEL,
    OVERLAP,
    REJECTED_BY_REASON,
    SPLITS,
    TRAINED_BY_SPLIT,
)
from curation.preannotate.estimates import photo_verdict

SPLIT_NAMES = ("train", "val", "test")
NO_ESTIMATE = "no estimate"  # a photo accepted without the machine: the shop's own, or imported
NOT_RECORDED = "not recorded"  # accepted without a person, or decided before annotators were kept
# A reason names its photo's figures ("product covers 23% of the photo, under 50%"); the report
# counts the rule it broke.
REASON_KINDS = (
    (re.compile(r"product covers \d+% of the photo, under (\d+%)"), r"product covers under \1 of the photo"),
    (re.compile(r"\d+ products in the photo"), "several products in the photo"),
)


def reason_kind(reason: str) -> str:
    for pattern, kind in REASON_KINDS:
        if pattern.fullmatch(reason):
            return pattern.sub(kind, reason)
    return reason


# The decision that agrees with a sure verdict.
AGREES = {"pass": "accept", "fail": "reject"}


@dataclass
class VerdictAgreement:
    verdict: str  # the machine's: pass, fail or unsure
    decided: int = 0  # photos with this verdict that a person decided
    accepted: int = 0

    @property
    def agreement(self) -> float | None:
        """Share of people's decisions that match a sure verdict; None for "unsure" or none decided."""
        if self.verdict not in AGREES or not self.decided:
            return None
        agreeing = self.accepted if AGREES[self.verdict] == "accept" else self.decided - self.accepted
        return agreeing / self.decided


@dataclass
class AnnotatorStats:
    annotator: str
    tasks: int = 0
    accepted: int = 0
    median_seconds: float | None = None
    sure_seen: int = 0  # their tasks where the machine was sure
    sure_agreed: int = 0
    compared: int = 0  # their answers on photos another person answered too
    agreed_final: int = 0  # of those, the ones that match the decision that counted

    @property
    def agreement_with_machine(self) -> float | None:
        return self.sure_agreed / self.sure_seen if self.sure_seen else None

    @property
    def agreement_with_final(self) -> float | None:
        return self.agreed_final / self.compared if self.compared else None


@dataclass
class Overlap:
    """Photos two annotators answered, and what became of them."""

    answered_by_two: int = 0  # both answers in
    agreed: int = 0
    in_review: int = 0  # decided differently, the reviewer has not answered yet
    reviewed: int = 0

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.answered_by_two if self.answered_by_two else None


@dataclass
class LabelingReport:
    funnel: dict[str, int]
    rejected_by_reason: dict[str, int]
    splits: dict[str, dict[str, int]]  # split -> {"photos": n, "views": n} of the newest training
    trained: dict[str, int] = field(default_factory=dict)  # split -> accepted photos in the newest training
    verdicts: list[VerdictAgreement] = field(default_factory=list)
    annotators: list[AnnotatorStats] = field(default_factory=list)
    overlap: Overlap = field(default_factory=Overlap)

    def as_dict(self) -> dict[str, Any]:
        return {
            "funnel": self.funnel,
            "rejected_by_reason": self.rejected_by_reason,
            "splits": self.splits,
            "trained": self.trained,
            "verdicts": [{**asdict(v), "agreement": v.agreement} for v in self.verdicts],
            "annotators": [
                {
                    **asdict(a),
                    "agreement_with_machine": a.agreement_with_machine,
                    "agreement_with_final": a.agreement_with_final,
                }
                for a in self.annotators
            ],
            "overlap": {**asdict(self.overlap), "agreement": self.overlap.agreement},
        }

    def funnel_steps(self) -> list[tuple[str, int, list[tuple[str, int]]]]:
        """Each step of the funnel, its count, and the counts it splits into: they add up to it."""
        f = self.funnel
        reasons = [(f"rejected: {reason}", n) for reason, n in self.rejected_by_reason.items()]
        trained = sum(self.trained.values())
        return [
            ("stored (crawled or imported)", f["crawled"],
             [("valid", f["valid"]), ("invalid", f["invalid"]), ("not yet checked", f["unchecked"])]),
            ("valid", f["valid"],
             [("kept, one per duplicate group", f["unique_photos"]), ("duplicates of a kept photo", f["duplicates"])]),
            ("kept", f["unique_photos"],
             [("usable", f["usable"]),
              ("posted under several products, waiting for a person's choice", f["unique_photos"] - f["usable"])]),
            ("usable (one product each)", f["usable"],
             [("sent to Label Studio", f["pushed"]),
              ("accepted without a task (the shop's catalog photos, imports)", f["accepted_without_task"]),
              ("not sent yet", f["usable"] - f["pushed"] - f["accepted_without_task"])]),
            ("sent to Label Studio", f["pushed"], [("decided", f["labeled"]), ("open", f["pushed"] - f["labeled"])]),
            ("decided", f["labeled"], [("accepted", f["accepted_by_people"]), *reasons]),
            ("accepted", f["accepted"],
             [("by a person", f["accepted_by_people"]), ("without a task", f["accepted_without_task"])]),
            ("accepted", f["accepted"],
             [("in the newest training", trained),
              ("not in it (its product has too few photos, or accepted since)", f["accepted"] - trained)]),
            ("in the newest training", trained, [(split, self.trained.get(split, 0)) for split in SPLIT_NAMES]),
        ]  # fmt: skip

    def markdown(self) -> str:
        lines = ["# Labeling\n\n## Funnel\n", "Each step's photos and what became of them: its parts add up to it.", ""]
        lines += ["| step | photos | made of |", "|---|---:|---|"]
        for step, n, parts in self.funnel_steps():
            lines.append(f"| {step} | {n} | {'; '.join(f'{part} {count}' for part, count in parts)} |")
        views = {split: self.splits.get(split, {}).get("views", 0) for split in SPLIT_NAMES}
        lines += [
            "",
            "The newest training's splits: whole accepted photos, and views cut to a person's box (of an "
            "accepted photo, or of a photo refused only because its product is small in it; they train only).",
            "",
            "| split | photos | views cut to a box | examples |",
            "|---|---:|---:|---:|",
        ]
        for split in SPLIT_NAMES:
            photos = self.splits.get(split, {}).get("photos", 0)
            lines.append(f"| {split} | {photos} | {views[split]} | {photos + views[split]} |")
        lines += ["", "## The machine's verdict against people's decisions", ""]
        lines += ["| machine said | decided by a person | accepted | agreement |", "|---|---|---|---|"]
        for v in self.verdicts:
            shown = "-" if v.agreement is None else f"{v.agreement:.1%}"
            lines.append(f"| {v.verdict} | {v.decided} | {v.accepted} | {shown} |")
        o = self.overlap
        lines += ["", "## Two annotators on one photo", ""]
        lines += [
            "Which decision counts: a photo one person is asked for, theirs; a photo two are asked for, "
            "theirs once both answered and agree; where they differ, the reviewer's.",
            "",
            f"Answered by two: {o.answered_by_two}; agreed: {o.agreed}"
            + ("" if o.agreement is None else f" ({o.agreement:.1%})")
            + f"; in review: {o.in_review}; reviewed: {o.reviewed}.",
        ]
        lines += ["", "## Annotators", ""]
        lines += [
            "| annotator | tasks | accepted | median seconds per task | agreement with the machine where it was sure "
            "| agreement with the decision that counted, where another person answered too |",
            "|---|---|---|---|---|---|",
        ]
        for a in self.annotators:
            seconds = "-" if a.median_seconds is None else f"{a.median_seconds:.1f}"
            agreed = "-" if a.agreement_with_machine is None else f"{a.agreement_with_machine:.1%} of {a.sure_seen}"
            final = "-" if a.agreement_with_final is None else f"{a.agreement_with_final:.1%} of {a.compared}"
            lines.append(f"| {a.annotator} | {a.tasks} | {a.accepted} | {seconds} | {agreed} | {final} |")
        return "\n".join(lines) + "\n"


def _verdict_of(row: Any) -> str:
    return photo_verdict(row["coverage_verdict"], row["objects_verdict"]) if row["coverage_verdict"] else NO_ESTIMATE


def verdict_records(manifest: Manifest) -> dict[str, VerdictAgreement]:
    """How people decided the photos of each machine verdict so far, by verdict."""
    records = {v: VerdictAgreement(v) for v in ("pass", "fail", "unsure")}
    for r in manifest.rows(DECIDED_WITH_ESTIMATES):
        record = records.get(_verdict_of(r))
        if record is not None and r["annotator"]:  # a person's decision, not an import's
            record.decided += 1
            record.accepted += r["decision"] == "accept"
    return records


def labeling_report(layout: Layout) -> LabelingReport:
    with open_manifest(layout) as manifest:
        funnel_row, labels_row = manifest.row(FUNNEL), manifest.row(LABEL_FUNNEL)
        assert funnel_row is not None and labels_row is not None
        report = LabelingReport(
            funnel={k: int(v) for k, v in {**dict(funnel_row), **dict(labels_row)}.items()},
            rejected_by_reason={},
            splits={},
        )
        for r in manifest.rows(SPLITS):
            report.splits.setdefault(str(r["split"]), {})[str(r["kind"])] = int(r["n"])
        report.trained = {str(r["split"]): int(r["n"]) for r in manifest.rows(TRAINED_BY_SPLIT)}
        for r in manifest.rows(REJECTED_BY_REASON):
            kind = reason_kind(str(r["reason"]))
            report.rejected_by_reason[kind] = report.rejected_by_reason.get(kind, 0) + int(r["n"])
        verdicts = {v: VerdictAgreement(v) for v in ("pass", "fail", "unsure", NO_ESTIMATE)}
        people: dict[str, AnnotatorStats] = {}
        seconds: dict[str, list[float]] = {}
        for r in manifest.rows(DECIDED_WITH_ESTIMATES):
            verdicts[_verdict_of(r)].decided += 1
            verdicts[_verdict_of(r)].accepted += r["decision"] == "accept"
        for r in manifest.rows(ANNOTATOR_WORK):
            verdict = _verdict_of(r)
            accepted = r["decision"] == "accept"
            who = r["annotator"] or NOT_RECORDED
            stats = people.setdefault(who, AnnotatorStats(who))
            stats.tasks += 1
            stats.accepted += accepted
            if r["lead_time"] is not None:
                seconds.setdefault(who, []).append(float(r["lead_time"]))
            if verdict in AGREES:
                stats.sure_seen += 1
                stats.sure_agreed += AGREES[verdict] == r["decision"]
        for r in manifest.rows(ANSWERS_AND_FINAL):
            if r["people"] > 1 and r["annotator"] in people:
                people[r["annotator"]].compared += 1
                people[r["annotator"]].agreed_final += r["decision"] == r["final"]
        report.overlap = overlap_of(manifest)
    for who, spent in seconds.items():
        people[who].median_seconds = statistics.median(spent)
    report.verdicts = [v for v in verdicts.values() if v.verdict != NO_ESTIMATE or v.decided]
    report.rejected_by_reason = dict(sorted(report.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
    report.annotators = sorted(people.values(), key=lambda a: (-a.tasks, a.annotator))
    return report


def overlap_of(manifest: Manifest) -> Overlap:
    row = manifest.row(OVERLAP)
    assert row is not None
    return Overlap(int(row["answered_by_two"]), int(row["agreed"]), int(row["in_review"]), int(row["reviewed"]))


def write_report(layout: Layout, report: LabelingReport) -> Path:
    """Writes labeling.md and labeling.json into the data folder's reports; returns the markdown's path."""
    folder = layout.data_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labeling.json").write_text(json.dumps(report.as_dict(), indent=1))
    path = folder / "labeling.md"
    path.write_text(report.markdown())
    return path
