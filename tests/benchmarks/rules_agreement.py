"""Automatic rule verdicts against the demo generator's ground truth.

For each rule and for both together: the share of photos the machine is sure of, and how often
its sure verdicts agree with the truth.

    .venv/bin/python -m tests.benchmarks.rules_agreement
"""

from __future__ import annotations

from curation.detector import Detector
from curation.estimates import estimate
from reviewlens.demoshop.generate import GeneratorConfig, generate, load_truth
from tests.benchmarks._shop import workdir


def main() -> None:
    shop = generate(GeneratorConfig(), workdir("rules") / "shop")
    truth = load_truth(shop)
    detector = Detector(min_score=0.3)
    rows = []
    for t in truth.values():
        e = estimate(detector.detect_file(shop / "photos" / f"{t.photo_id}.jpg"))
        rows.append((t, e))
    for rule, verdict_of, true_pass in (
        ("coverage", lambda e: e.coverage_verdict, lambda t: t.coverage >= 0.5),
        ("one_object", lambda e: e.objects_verdict, lambda t: t.n_objects == 1),
        ("both", lambda e: e.verdict, lambda t: t.coverage >= 0.5 and t.n_objects == 1),
    ):
        sure = [(t, verdict_of(e)) for t, e in rows if verdict_of(e) != "unsure"]
        agree = sum((v == "pass") == true_pass(t) for t, v in sure)
        print(
            f"{rule}: sure of {len(sure)} of {len(rows)} ({len(sure) / len(rows):.3f}), "
            f"agreement {agree / max(len(sure), 1):.3f}"
        )
    both = [(t, e.verdict) for t, e in rows if e.verdict != "unsure"]
    agreement = sum((v == "pass") == (t.coverage >= 0.5 and t.n_objects == 1) for t, v in both) / max(len(both), 1)
    print(f"sure_share: {len(both) / len(rows):.3f}")
    print(f"agreement_on_sure: {agreement:.3f}")


if __name__ == "__main__":
    main()
