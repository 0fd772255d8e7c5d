"""The labeling report on decisions whose agreement with the machine is known by construction."""

from __future__ import annotations

import json

import pytest

from core.layout import Layout
from core.manifest import open_manifest, utc_now
from curation.labeling.report import labeling_report, write_report
from reviewlens.cli import main
from tests.db import run, run_many

# The manifest's queries, the same on both engines: each test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_engines

# (machine's coverage verdict, objects verdict, decision, reason, annotator, seconds)
DECIDED = [
    ("pass", "pass", "accept", None, "alice@shop", 4.0),
    ("pass", "pass", "accept", None, "alice@shop", 6.0),
    ("pass", "pass", "accept", None, "alice@shop", 8.0),
    ("pass", "pass", "reject", "product covers 30% of the photo, under 50%", "bob@shop", 20.0),
    ("fail", "pass", "reject", "product covers 22% of the photo, under 50%", "bob@shop", 2.0),
    ("pass", "fail", "reject", "2 products in the photo", "bob@shop", 3.0),
    ("fail", "fail", "reject", "2 products in the photo", "bob@shop", 5.0),
    ("unsure", "pass", "accept", None, "alice@shop", 10.0),
    ("pass", "unsure", "accept", None, "alice@shop", 12.0),
    ("unsure", "unsure", "reject", "2 products in the photo", "alice@shop", 14.0),
]


def test_the_report_counts_the_funnel_agreement_per_verdict_and_each_annotator(
    deduped: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = deduped
    with open_manifest(layout) as m:
        usable = [r[0] for r in run(m, "SELECT sha256 FROM usable_photos ORDER BY sha256")]
        photos = run(m, "SELECT COUNT(*) FROM photos").fetchone()[0]
        chosen = usable[: len(DECIDED) + 2]  # two more pushed and not yet answered
        for i, sha in enumerate(chosen):
            run(m, "INSERT INTO labels (sha256, project_id, task_id, pushed_at) VALUES (?,1,?,?)",
                           (sha, i + 1, utc_now()))  # fmt: skip
        for sha, (coverage, objects, decision, reason, who, seconds) in zip(chosen, DECIDED, strict=False):
            run(
                m,
                "INSERT INTO estimates (sha256, coverage, n_objects, confidence, coverage_verdict, objects_verdict, "
                "model_version) VALUES (?, 0.5, 1, 0.5, ?, ?, 'm')",
                (sha, coverage, objects),
            )
            run(
                m,
                "UPDATE labels SET decision = ?, reason = ?, annotator = ?, lead_time = ?, decided_at = ? "
                "WHERE sha256 = ?",
                (decision, reason, who, seconds, utc_now(), sha),
            )
        # An imported photo, accepted without a task.
        imported = usable[len(DECIDED) + 2]
        run(m, "INSERT INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
               "VALUES (?, 0, 0, ?, 'accept', ?)", (imported, utc_now(), utc_now()))  # fmt: skip
        run_many(m, "INSERT INTO splits VALUES ('old', ?, 'train')", [(s,) for s in usable[:3]])
        # The newest training: the accepted photos (one of them with a view cut to its box), the
        # imported photo, and the view of a photo refused for its small product.
        accepted = [sha for sha, d in zip(chosen, DECIDED, strict=False) if d[2] == "accept"]
        newest = [(accepted[0], "train"), (accepted[1], "train"), (accepted[2], "val"), (accepted[3], "test")]
        views = [f"{accepted[0]}#0.1,0.1,0.6,0.6", f"{chosen[3]}#0,0,0.2,0.2"]
        newest += [(imported, "train"), *((view, "train") for view in views)]
        run_many(m, "INSERT INTO splits VALUES ('new', ?, ?)", newest)

    report = labeling_report(layout)
    f = report.funnel
    assert f["crawled"] == photos and f["usable"] == len(usable)
    assert (f["pushed"], f["labeled"], f["accepted"]) == (len(DECIDED) + 2, len(DECIDED), 6)
    assert f["accepted_without_task"] == 1 and f["invalid"] + f["duplicates"] > 0
    # Every step of the funnel is the sum of what became of its photos.
    steps = report.funnel_steps()
    for step, n, parts in steps:
        assert n == sum(count for _, count in parts) and all(count >= 0 for _, count in parts), (step, n, parts)
    assert [n for _, n, _ in steps][:4] == [photos, f["valid"], f["unique_photos"], len(usable)]
    # Counted by the rule broken, not by each photo's figures.
    assert report.rejected_by_reason == {"several products in the photo": 3, "product covers under 50% of the photo": 2}
    # The newest snapshot's: whole photos and views apart; of the 6 accepted, 5 trained (one left out).
    assert report.splits == {"train": {"photos": 3, "views": 2}, "val": {"photos": 1}, "test": {"photos": 1}}
    assert report.trained == {"train": 3, "val": 1, "test": 1}

    verdicts = {v.verdict: v for v in report.verdicts}
    # pass: 3 accepted, 1 rejected; fail (either rule failed): 3, all rejected; unsure: 3, 2 accepted.
    assert (verdicts["pass"].decided, verdicts["pass"].agreement) == (4, 0.75)
    assert (verdicts["fail"].decided, verdicts["fail"].agreement) == (3, 1.0)
    assert (verdicts["unsure"].decided, verdicts["unsure"].accepted, verdicts["unsure"].agreement) == (3, 2, None)

    alice, bob = report.annotators[0], report.annotators[1]
    assert (alice.annotator, alice.tasks, alice.accepted, alice.median_seconds) == ("alice@shop", 6, 5, 9.0)
    assert (alice.sure_seen, alice.agreement_with_machine) == (3, 1.0)
    assert (bob.annotator, bob.tasks, bob.accepted, bob.median_seconds) == ("bob@shop", 4, 0, 4.0)
    assert (bob.sure_seen, bob.agreement_with_machine) == (4, 0.75)

    path = write_report(layout, report)
    markdown = path.read_text()
    assert "| accepted | 6 | by a person 5; without a task 1 |" in markdown
    assert "| decided | 10 | accepted 5; rejected: several products in the photo 3; " in markdown
    assert "| train | 3 | 2 | 5 |" in markdown
    assert "| pass | 4 | 3 | 75.0% |" in markdown and "| bob@shop | 4 | 0 | 4.0 | 75.0% of 4 |" in markdown
    saved = json.loads((path.parent / "labeling.json").read_text())
    assert saved["annotators"][1]["agreement_with_machine"] == 0.75

    assert main(["label", "report", "--data-dir", str(layout.data_dir)]) == 0
    assert "| alice@shop | 6 | 5 | 9.0 | 100.0% of 3 |" in capsys.readouterr().out
