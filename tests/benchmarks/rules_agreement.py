"""Automatic rule verdicts against the demo generator's ground truth.

For each rule and for both together: the share of photos the machine is sure of, and how often
its sure verdicts agree with the truth; first from the COCO detector alone, then with the
co-localiser (curation/preannotate/colocalise.py) run over each product's photos, as label push runs it.
The last two lines are the second's.

    .venv/bin/python -m tests.benchmarks.rules_agreement [--seed 0]
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from curation.preannotate.colocalise import CoLocaliser, Location
from curation.preannotate.estimates import RuleEstimate, estimate
from demo.shop.annotator import product_of
from demo.shop.generate import GeneratorConfig, PhotoTruth, generate, load_truth
from models.coco_detector import Detector
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized

RULES: tuple[tuple[str, Callable[[RuleEstimate], str], Callable[[PhotoTruth], bool]], ...] = (
    ("coverage", lambda e: e.coverage_verdict, lambda t: t.coverage >= 0.5),
    ("one_object", lambda e: e.objects_verdict, lambda t: t.n_objects == 1),
    ("both", lambda e: e.verdict, lambda t: t.coverage >= 0.5 and t.n_objects == 1),
)


def report(name: str, rows: list[tuple[PhotoTruth, RuleEstimate]]) -> tuple[float, float]:
    """Prints each rule's figures; returns (sure share, agreement on sure) for both rules."""
    figures = (0.0, 0.0)
    for rule, verdict_of, true_pass in RULES:
        sure = [(t, verdict_of(e)) for t, e in rows if verdict_of(e) != "unsure"]
        agree = sum((v == "pass") == true_pass(t) for t, v in sure) / max(len(sure), 1)
        print(f"{name} {rule}: sure of {len(sure)} of {len(rows)} ({len(sure) / len(rows):.3f}), agreement {agree:.3f}")
        figures = (len(sure) / len(rows), agree)
    return figures


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--seed", type=int, default=0, help="the demo generator's seed")
    shop_size = sized({}, {"n_categories": 1, "products_per_category": 3, "photos_per_product": 8})
    shop = generate(GeneratorConfig(seed=parser.parse_args().seed, **shop_size), workdir("rules") / "shop")
    truth = load_truth(shop)
    path = {t.photo_id: shop / "photos" / f"{t.photo_id}.jpg" for t in truth.values()}
    started = time.monotonic()
    detector = Detector(min_score=0.3)
    detections = {p: detector.detect_file(path[p]) for p in truth}
    detect_s = time.monotonic() - started

    started = time.monotonic()
    localiser = CoLocaliser()
    by_product: dict[str, list[str]] = defaultdict(list)
    for t in truth.values():
        # A photo posted under another product too is located once a person has chosen the
        # product it shows (curation/labeling/product_choice.py): among that product's photos.
        by_product[product_of(truth, t.photo_id)].append(t.photo_id)
    located: dict[str, Location] = {}
    for photos in by_product.values():
        found = localiser.locate([path[p] for p in photos])
        located.update(zip(photos, found or [], strict=False))
    locate_s = time.monotonic() - started
    print(
        f"photos: {len(truth)} of {len(by_product)} products; detector {detect_s:.0f} s, co-localiser {locate_s:.0f} s"
    )

    report("detector", [(t, estimate(detections[p])) for p, t in truth.items()])
    sure, agreement = report("combined", [(t, estimate(detections[p], 0.5, located.get(p))) for p, t in truth.items()])
    print(f"sure_share: {sure:.3f}")
    print(f"agreement_on_sure: {agreement:.3f}")


if __name__ == "__main__":
    main()
