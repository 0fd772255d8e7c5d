"""The machine's rule verdicts on real photos: grocery photos composed into cases whose truth is
known, with the demo shop's, its thresholds tuned on half of the products and reported on the rest.

Cases of each grocery product (81 products, ../shared/data/grocery-store), its "review photos":
- alone: one of its photos scaled into a larger real background (another product's photo,
  blurred past recognition) at a known coverage, 10% to 95% of the frame;
- beside another: one of its photos and another product's side by side (two products: fail);
- catalog: its iconic photo alone on white (one product; its coverage from the non-white pixels).
Each product's cases are co-localised together, as label push co-localises a product's photos;
the demo shop's photos join them with the generator's truth.

A photo on a plain backdrop (the catalog photos) is measured from its pixels
(curation/preannotate/plain_background.py), the others are co-localised, as the push does.

The thresholds (curation/preannotate/estimates.py: Thresholds, and the co-localiser's split at
which a second object is counted) are chosen on half of the products, drawn by a seeded lot: the
largest share of sure verdicts whose agreement with the truth there clears the goal's 0.95 by
the optimism of such a choice, measured within the tuning half (chosen on half of its products,
the agreement lost on the other half, each way, averaged over five lots of its halves): the best of some 2,000 sets of
thresholds flatters the photos it was chosen on. The other
half reports, beside the thresholds in use. The last lines are the held-out figures.

    .venv/bin/python -m tests.benchmarks.rules_agreement_real [--alone 10] [--beside 3]
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from curation.preannotate.colocalise import MIN_PHOTOS, SECOND_OBJECT_SPLIT, CoLocaliser, Location, locate_in
from curation.preannotate.estimates import Thresholds, estimate
from curation.preannotate.plain_background import on_plain_background
from demo.shop.annotator import product_of
from demo.shop.generate import GeneratorConfig, generate, load_truth
from models.coco_detector import Detection, Detector
from tests.benchmarks._grocery import GROCERY, grocery_photos
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized

SCENE = (1024, 768)
MIN_COVERAGE = 0.5
GOAL_AGREEMENT = 0.95
INNER_LOTS = sized(5, 1)  # lots of the tuning half into two, to measure how much a choice flatters its own half
GRID = {
    "second_object_split": (0.08, 0.1, 0.12, 0.14, 0.16, 0.2, 0.25),
    "split_fails": (0.25, 0.3, 0.4, math.inf),  # inf: a split alone never fails the rule
    "sure_score": (0.5, 0.6, 0.7, 0.8),
    "coverage_margin": (0.03, 0.05, 0.08, 0.1),
    "alone_margin": (0.05, 0.1, 0.15, 0.2, 0.25),
}


@dataclass(frozen=True)
class Case:
    path: Path
    group: str  # the product whose photos it is among
    kind: str  # alone, beside, catalog, demo
    coverage: float
    n_objects: int

    @property
    def passes(self) -> bool:
        return self.coverage >= MIN_COVERAGE and self.n_objects == 1


def _blurred(background: Image.Image) -> Image.Image:
    width, height = SCENE
    scale = max(width / background.width, height / background.height)
    bg = background.resize((math.ceil(background.width * scale), math.ceil(background.height * scale)))
    left, top = (bg.width - width) // 2, (bg.height - height) // 2
    return bg.crop((left, top, left + width, top + height)).filter(ImageFilter.GaussianBlur(24))


def alone(
    photo: Image.Image, background: Image.Image, coverage: float, rng: random.Random
) -> tuple[Image.Image, float]:
    """`photo` at `coverage` of a blurred real scene; the coverage it got (a side may reach the frame)."""
    width, height = SCENE
    scene = _blurred(background)
    area = coverage * width * height
    w = min(width, round(math.sqrt(area * photo.width / photo.height)))
    h = min(height, round(area / w))
    x, y = rng.randint(0, width - w), rng.randint(0, height - h)
    scene.paste(photo.resize((w, h), Image.Resampling.BICUBIC), (x, y))
    return scene, w * h / (width * height)


def beside(photo: Image.Image, other: Image.Image, background: Image.Image, rng: random.Random) -> Image.Image:
    """Two products side by side, each filling most of its half of a blurred real scene."""
    width, height = SCENE
    scene = _blurred(background)
    halves = [photo, other] if rng.random() < 0.5 else [other, photo]
    for n, img in enumerate(halves):
        fill = rng.uniform(0.6, 0.95)
        scale = fill * min(width / 2 / img.width, height / img.height)
        w, h = round(img.width * scale), round(img.height * scale)
        x = n * width // 2 + (width // 2 - w) // 2
        scene.paste(img.resize((w, h), Image.Resampling.BICUBIC), (x, (height - h) // 2))
    return scene


def catalog_coverage(photo: Image.Image) -> float:
    """The share of an iconic photo the product's box covers: the box of its non-white pixels."""
    rows, cols = np.nonzero((np.asarray(photo.convert("RGB")) < 235).any(axis=2))
    if not len(rows):
        return 0.0
    return float((rows.max() + 1 - rows.min()) * (cols.max() + 1 - cols.min()) / (photo.height * photo.width))


def grocery_cases(root: Path, n_alone: int, n_beside: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    by_product: dict[str, list[Path]] = defaultdict(list)
    for p in grocery_photos():
        by_product[p.parent.relative_to(GROCERY).as_posix().split("/", 2)[-1]].append(p)
    products = sorted(by_product)
    iconic = {}
    with (GROCERY / "classes.csv").open() as f:
        for row in csv.DictReader(f):
            iconic[row["Class Name (str)"]] = GROCERY / row["Iconic Image Path (str)"].lstrip("/")
    cases = []
    for product in products:
        name = product.replace("/", "-")
        for n in range(n_alone):
            other = rng.choice([p for p in products if p != product])
            coverage = rng.uniform(0.1, 0.95)
            with Image.open(rng.choice(by_product[product])) as a, Image.open(rng.choice(by_product[other])) as b:
                scene, got = alone(a.convert("RGB"), b.convert("RGB"), coverage, rng)
            path = root / f"{name}-alone-{n}.jpg"
            scene.save(path, quality=90)
            cases.append(Case(path, product, "alone", got, 1))
        for n in range(n_beside):
            other, third = rng.sample([p for p in products if p != product], 2)
            with (
                Image.open(rng.choice(by_product[product])) as a,
                Image.open(rng.choice(by_product[other])) as b,
                Image.open(rng.choice(by_product[third])) as c,
            ):
                scene = beside(a.convert("RGB"), b.convert("RGB"), c.convert("RGB"), rng)
            path = root / f"{name}-beside-{n}.jpg"
            scene.save(path, quality=90)
            cases.append(Case(path, product, "beside", 0.5, 2))
        icon = iconic.get(product.rsplit("/", 1)[-1])
        if icon is not None and icon.exists():
            with Image.open(icon) as img:
                cases.append(Case(icon, product, "catalog", catalog_coverage(img), 1))
    return cases


def demo_cases(root: Path, seed: int) -> list[Case]:
    config = GeneratorConfig(seed=seed, n_categories=2, products_per_category=4, photos_per_product=sized(30, 5))
    shop = generate(config, root)
    truth = load_truth(shop)
    return [
        Case(shop / "photos" / f"{t.photo_id}.jpg", f"demo-{product_of(truth, t.photo_id)}", "demo", t.coverage,
             t.n_objects)
        for t in truth.values()
    ]  # fmt: skip


@dataclass(frozen=True)
class Figures:
    sure: float
    agreement: float


def figures(cases: list[Case], verdicts: list[str]) -> Figures:
    sure = [(c, v) for c, v in zip(cases, verdicts, strict=True) if v != "unsure"]
    agree = sum((v == "pass") == c.passes for c, v in sure) / max(len(sure), 1)
    return Figures(len(sure) / max(len(cases), 1), agree)


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--alone", type=int, default=sized(10, 2), help="composed photos of each product alone")
    parser.add_argument(
        "--beside", type=int, default=sized(3, 1), help="composed photos of each product beside another"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dump", type=Path, help="a JSON file of each held-out photo's truth and estimate")
    args = parser.parse_args()
    root = workdir("rules-real")
    (root / "cases").mkdir()
    started = time.monotonic()
    cases = grocery_cases(root / "cases", args.alone, args.beside, args.seed) + demo_cases(root / "demo", args.seed)
    groups = sorted({c.group for c in cases})
    print(f"{len(cases)} photos of {len(groups)} products composed in {time.monotonic() - started:.0f} s", flush=True)

    started = time.monotonic()
    detector = Detector(min_score=0.3)
    detections: list[list[Detection]] = [detector.detect_file(c.path) for c in cases]
    localiser = CoLocaliser()
    members: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cases):
        members[c.group].append(i)
    descriptors = {g: localiser.descriptors([cases[i].path for i in ids]) for g, ids in members.items()}
    plain = [on_plain_background(c.path) for c in cases]  # as the push measures a photo on a plain backdrop
    print(f"detector and descriptors in {time.monotonic() - started:.0f} s", flush=True)

    # Half of the products tune, the other half reports.
    lot = random.Random(args.seed)
    tune_groups = set(lot.sample(groups, len(groups) // 2))
    tune = [i for i, c in enumerate(cases) if c.group in tune_groups]
    held = [i for i, c in enumerate(cases) if c.group not in tune_groups]

    def locations(second_object_split: float) -> list[Location | None]:
        out: list[Location | None] = list(plain)
        for g, ids in members.items():
            if len(ids) >= MIN_PHOTOS:
                for i, loc in zip(ids, locate_in(descriptors[g], second_object_split), strict=True):
                    out[i] = plain[i] or loc
        return out

    def verdicts(located: list[Location | None], t: Thresholds, ids: list[int]) -> list[str]:
        return [estimate(detections[i], MIN_COVERAGE, located[i], t).verdict for i in ids]

    started = time.monotonic()
    tried: list[tuple[float, Thresholds, dict[int, str]]] = []  # every set of thresholds, its tuning verdicts
    for split in GRID["second_object_split"]:
        located = locations(split)
        for sure_score, margin, alone_margin, fails in itertools.product(
            GRID["sure_score"], GRID["coverage_margin"], GRID["alone_margin"], GRID["split_fails"]
        ):
            if fails >= split:
                t = Thresholds(sure_score, margin, alone_margin, fails)
                tried.append((split, t, dict(zip(tune, verdicts(located, t, tune), strict=True))))

    def choose(ids: list[int], floor: float) -> tuple[float, Thresholds, dict[int, str]] | None:
        """The most sure verdicts on `ids` whose agreement there is at least `floor`."""
        scored = [(figures([cases[i] for i in ids], [v[i] for i in ids]), (split, t, v)) for split, t, v in tried]
        ok = [(f.sure, f.agreement, n) for n, (f, _) in enumerate(scored) if f.agreement >= floor]
        return scored[max(ok)[2]][1] if ok else None

    # The best of so many thresholds flatters the half it was chosen on. How much, measured within
    # the tuning half alone: chosen on half of its products, the agreement lost on the other half,
    # each way; the tuning half's choice must clear the goal by that much.
    # One lot of halves gives a noisy figure: it is averaged over INNER_LOTS lots.
    lost = []
    for lot_seed in range(args.seed + 1, args.seed + 1 + INNER_LOTS):
        inner = set(random.Random(lot_seed).sample(sorted(tune_groups), len(tune_groups) // 2))
        halves = [[i for i in tune if cases[i].group in inner], [i for i in tune if cases[i].group not in inner]]
        for on, other in (halves, halves[::-1]):
            if (picked := choose(on, GOAL_AGREEMENT)) is not None:
                verdicts_of = picked[2]
                on_f, other_f = (figures([cases[i] for i in ids], [verdicts_of[i] for i in ids]) for ids in (on, other))
                lost.append(max(0.0, on_f.agreement - other_f.agreement))
    margin = sum(lost) / max(len(lost), 1)
    best = choose(tune, GOAL_AGREEMENT + margin)
    print(
        f"grid searched in {time.monotonic() - started:.0f} s; optimism within the tuning half: {margin:.3f}",
        flush=True,
    )

    in_use = (SECOND_OBJECT_SPLIT, Thresholds())
    chosen = (best[0], best[1]) if best else in_use
    print(f"tuned: second object from a split of {chosen[0]}, {chosen[1]}")
    for name, (split, t) in (("in use", in_use), ("tuned", chosen)):
        located = locations(split)
        for part, ids in (("tuning half", tune), ("held-out half", held)):
            f = figures([cases[i] for i in ids], verdicts(located, t, ids))
            print(f"{name}, {part}: sure of {f.sure:.3f}, agreement {f.agreement:.3f}")
        for kind in ("alone", "beside", "catalog", "demo"):
            ids = [i for i in held if cases[i].kind == kind]
            f = figures([cases[i] for i in ids], verdicts(located, t, ids))
            print(f"  {name}, held-out {kind} ({len(ids)} photos): sure of {f.sure:.3f}, agreement {f.agreement:.3f}")
    located = locations(chosen[0])
    f = figures([cases[i] for i in held], verdicts(located, chosen[1], held))
    if args.dump:
        rows = []
        for i in held:
            e = estimate(detections[i], MIN_COVERAGE, located[i], chosen[1])
            loc = located[i]
            rows.append({"path": str(cases[i].path), "kind": cases[i].kind, "coverage": cases[i].coverage,
                         "n_objects": cases[i].n_objects, "estimate": asdict(e), "verdict": e.verdict,
                         "located_objects": None if loc is None else loc.n_objects,
                         "split": None if loc is None else loc.split,
                         "detections": [(d.label, d.score) for d in detections[i]]})  # fmt: skip
        args.dump.write_text(json.dumps(rows, indent=1))
    print(f"held_out_agreement_on_sure: {f.agreement:.3f}")
    print(f"held_out_sure_share: {f.sure:.3f}")


if __name__ == "__main__":
    main()
