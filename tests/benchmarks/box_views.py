"""The labeling stage's boxes as training data, on real photos: products small in a scene.

Half of each grocery product's train photos reach the annotators as photos the coverage rule
refuses: composed small (8% to 30% of the frame) into a larger real background (another
product's photo, blurred past recognition), with the person's box around the product. Two models
of the pipeline's own quick training, in one run: on the accepted half alone (the photos the
study's rules keep), and with the views cut to the refused photos' boxes (`train_on_boxes`).
Each is indexed as `reviewlens index` indexes it (the views too) and asked about the grocery test
photos, composed the same way:
- cut at the product's box, what a good proposal of the object search hands the model: the
  product's share of top-1 and top-3 answers (`predict`'s merged answer);
- through the object search on a sample of the scenes: an answer whose box centre lies in the
  product's box with the product in its top 3;
  with how many answers a scene of one product gets (and how many of them are sure);
- the whole test photos as they are, so that views are seen to cost nothing there.

    .venv/bin/python -m tests.benchmarks.box_views [--members ...] [--scenes 100] [--features DIR]

--features: an earlier grocery benchmark's folder, whose cached features of the whole photos are reused.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from pathlib import Path

from PIL import Image, ImageFilter

from core.boxes import Box, box_text
from core.layout import Layout
from core.settings import TrainConfig
from search.finder import Answer, Finder
from tests.benchmarks._grocery import GROCERY
from tests.benchmarks._photos import finder_over, show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import SMALL_TRAIN, sized
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks.grocery_accuracy import grocery_snapshot
from training.bundle import Ensemble
from training.data import Example, Snapshot, load_image
from training.loading import PhotoRef
from training.train import train_snapshot

SCENE = (1024, 768)
COVERAGE = (0.08, 0.3)


def compose(photo: Image.Image, background: Image.Image, rng: random.Random) -> tuple[Image.Image, Box]:
    """`photo` pasted small into `background` (blurred, filling the frame); the photo's box as fractions."""
    width, height = SCENE
    scale = max(width / background.width, height / background.height)
    bg = background.resize((math.ceil(background.width * scale), math.ceil(background.height * scale)))
    left, top = (bg.width - width) // 2, (bg.height - height) // 2
    scene = bg.crop((left, top, left + width, top + height)).filter(ImageFilter.GaussianBlur(24))
    area = rng.uniform(*COVERAGE) * width * height
    w = min(width, round(math.sqrt(area * photo.width / photo.height)))
    h = min(height, round(area / w))
    x, y = rng.randint(0, width - w), rng.randint(0, height - h)
    scene.paste(photo.resize((w, h), Image.Resampling.BICUBIC), (x, y))
    return scene, (x / width, y / height, (x + w) / width, (y + h) / height)


def scenes_of(
    examples: list[Example], others: list[Example], layout: Layout, seed: int
) -> list[tuple[Example, Example]]:
    """Each example's photo composed into a scene, stored; (the example, its scene's view at the box)."""
    rng = random.Random(seed)
    folder = layout.store_dir / "scenes"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for e in examples:
        background = rng.choice([o for o in others if o.label != e.label])
        name = f"scenes/{seed}-{e.sha256[:16]}.jpg"
        scene, box = compose(load_image(layout.store_dir / e.path), load_image(layout.store_dir / background.path), rng)
        scene.save(layout.store_dir / name, quality=90)
        sha = hashlib.sha256((layout.store_dir / name).read_bytes()).hexdigest()
        out.append((e, Example(sha, name, sha, e.label, e.split, box_text(box))))
    return out


def top_k(answers: list[Answer], labels: list[int], snapshot: Snapshot, k: int) -> float:
    wanted = [snapshot.classes[label].product_id for label in labels]
    hits = [w in [m.product.product_id for m in a.best.matches[:k]] for w, a in zip(wanted, answers, strict=True)]
    return 100 * sum(hits) / len(hits)


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--members", nargs="+", default=list(sized(TrainConfig().members, SMALL_TRAIN["members"])))
    parser.add_argument("--scenes", type=int, default=sized(100, 2), help="test scenes searched for objects (slow)")
    parser.add_argument("--features", type=Path, help="an earlier grocery benchmark's folder, to reuse its features")
    args = parser.parse_args()
    show_progress()
    grocery = grocery_snapshot()
    layout = Layout(workdir("box-views"))
    layout.store_dir.mkdir(parents=True)
    os.symlink(GROCERY, layout.store_dir / "grocery")
    if args.features:
        os.symlink((args.features / "cache").resolve(), layout.cache_dir)
    examples = [Example(e.sha256, f"grocery/{e.path}", e.group_id, e.label, e.split) for e in grocery.examples]

    by_product: dict[int, list[Example]] = {}
    for e in examples:
        if e.split == "train":
            by_product.setdefault(e.label, []).append(e)
    accepted = [e for es in by_product.values() for e in es[::2]]
    refused = [e for es in by_product.values() for e in es[1::2]]
    val = [e for e in examples if e.split == "val"]
    test = [e for e in examples if e.split == "test"]
    views = [view for _, view in scenes_of(refused, examples, layout, seed=1)]
    test_scenes = [view for _, view in scenes_of(test, examples, layout, seed=2)]
    print(f"{len(accepted)} accepted train photos, {len(refused)} refused as small (views), {len(test)} test photos")

    results = {}
    for name, train_set in (("accepted photos alone", accepted), ("with the views of boxes", accepted + views)):
        snapshot = Snapshot(f"box-views-{len(train_set)}", grocery.classes, [*train_set, *val, *test])
        run_dir = train_snapshot(snapshot, TrainConfig(mode="quick", members=tuple(args.members)), layout)
        ensemble = Ensemble.load(run_dir)
        finder = finder_over(ensemble, layout, snapshot, [*train_set, *val])

        def merged(found: list[Example], finder: Finder = finder, ensemble: Ensemble = ensemble) -> list[Answer]:
            refs = [PhotoRef(layout.store_dir / e.path, e.sha256, e.box) for e in found]
            return finder.answer_features(ensemble.photo_features(refs, layout), k=3)

        whole, cut = merged(test), merged(test_scenes)
        labels = [e.label for e in test]
        found = answers = sure = 0
        sample = test_scenes[:: max(1, len(test_scenes) // args.scenes)][: args.scenes]
        for e in sample:
            left, top, right, bottom = (float(v) for v in e.box.split(","))
            answered = finder.answer([load_image(layout.store_dir / e.path)])[0].objects
            answers += len(answered)
            sure += sum(a.sure for a in answered)
            inside = [
                a
                for a in answered
                if left <= (a.box[0] + a.box[2]) / 2 < right and top <= (a.box[1] + a.box[3]) / 2 < bottom
            ]
            wanted = snapshot.classes[e.label].product_id
            found += any(wanted in [m.product.product_id for m in a.matches] for a in inside)
        results[name] = {
            "whole top1": top_k(whole, labels, snapshot, 1),
            "cut top1": top_k(cut, labels, snapshot, 1),
            "cut top3": top_k(cut, labels, snapshot, 3),
            "scene found": 100 * found / len(sample),
            "answers per scene": answers / len(sample),
            "sure answers per scene": sure / len(sample),
        }
        print(name, {k: round(v, 2) for k, v in results[name].items()}, flush=True)

    print(f"members: {', '.join(args.members)}; {len(test)} test photos, {args.scenes} scenes searched")
    print("| trained on | whole test top-1 | cut at the box top-1 | top-3 | scene: found in top 3 | answers (sure) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        figures = " | ".join(f"{r[k]:.1f}" for k in ("whole top1", "cut top1", "cut top3", "scene found"))
        print(f"| {name} | {figures} | {r['answers per scene']:.2f} ({r['sure answers per scene']:.2f}) |")
    base, boxed = results["accepted photos alone"], results["with the views of boxes"]
    print(f"box_views_cut_top1_gain: {boxed['cut top1'] - base['cut top1']:.1f}")


if __name__ == "__main__":
    main()
