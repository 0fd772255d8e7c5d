"""Several products in one photo: mosaics of 2 to 4 grocery test photos, every object searched.

The model is the pipeline's own quick training on the grocery store's train and val photos (81
products), with an index of those photos. Each mosaic puts 2 photos side by side or 3 to 4 in a
2 x 2 grid (an empty cell stays grey). An object counts as found when an answer's box has its
centre in the object's cell and the product is in that answer's top 3. Beside it, the same
photos asked one at a time (predict's answer for the whole photo): the figure is the ratio.

Note on what this measures: the cells of a mosaic line up with the search's grid of regions,
which a real photo's objects do not; the figure is the search's ceiling on separate objects.

    .venv/bin/python -m tests.benchmarks.multi_object [--mosaics 500] [--members ...] [--workdir DIR]
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from PIL import Image

from core.settings import TrainConfig
from tests.benchmarks._grocery import grocery_layout
from tests.benchmarks._photos import finder_over, show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import SMALL_TRAIN, sized
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks.grocery_accuracy import grocery_snapshot
from training.bundle import Ensemble
from training.data import Example, load_image
from training.train import train_snapshot

CELL = 320


def mosaic(photos: list[Path]) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
    """The photos as cells of one picture, and each cell's box as fractions."""
    columns, rows = (2, 1) if len(photos) == 2 else (2, 2)
    canvas = Image.new("RGB", (columns * CELL, rows * CELL), (128, 128, 128))
    boxes = []
    for i, path in enumerate(photos):
        img = load_image(path)
        side = min(img.size)
        img = img.crop(
            ((img.width - side) // 2, (img.height - side) // 2, (img.width + side) // 2, (img.height + side) // 2)
        )
        col, row = i % columns, i // columns
        canvas.paste(img.resize((CELL, CELL), Image.Resampling.BICUBIC), (col * CELL, row * CELL))
        boxes.append((col / columns, row / rows, (col + 1) / columns, (row + 1) / rows))
    return canvas, boxes


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--mosaics", type=int, default=sized(500, 2))
    parser.add_argument("--members", nargs="+", default=list(sized(TrainConfig().members, SMALL_TRAIN["members"])))
    parser.add_argument("--workdir", type=Path, help="an earlier run's folder, whose cached features are reused")
    parser.add_argument(
        "--object-top", type=int, default=3, help="likeliest products whose probability makes a region an object"
    )
    args = parser.parse_args()
    show_progress()
    snapshot = grocery_snapshot()
    layout = grocery_layout(args.workdir or workdir("grocery"))
    run_dir = train_snapshot(snapshot, TrainConfig(mode="quick", members=tuple(args.members)), layout)
    known = [e for e in snapshot.examples if e.split != "test"]
    finder = finder_over(Ensemble.load(run_dir), layout, snapshot, known)
    finder.object_top = args.object_top

    rng = random.Random(0)
    test = [e for e in snapshot.examples if e.split == "test"]
    cases: list[list[Example]] = []
    for _ in range(args.mosaics):
        n = rng.randint(2, 4)
        picked: list[Example] = []
        while len(picked) < n:  # different products in one mosaic
            e = rng.choice(test)
            if all(p.label != e.label for p in picked):
                picked.append(e)
        cases.append(picked)

    def product(e: Example) -> str:
        return snapshot.classes[e.label].product_id

    started = time.monotonic()
    found = objects = answers = 0
    for i, case in enumerate(cases):
        picture, cells = mosaic([layout.store_dir / e.path for e in case])
        answered = finder.answer([picture])[0].objects
        answers += len(answered)
        for e, (left, top, right, bottom) in zip(case, cells, strict=True):
            objects += 1
            inside = [
                a
                for a in answered
                if left <= (a.box[0] + a.box[2]) / 2 < right and top <= (a.box[1] + a.box[3]) / 2 < bottom
            ]
            found += bool(inside) and product(e) in [m.product.product_id for m in inside[0].matches]
        if (i + 1) % 50 == 0:
            print(
                f"{i + 1} mosaics: {found} of {objects} objects found, {time.monotonic() - started:.0f} s", flush=True
            )
    mosaic_seconds = (time.monotonic() - started) / len(cases)

    singles = list({e.sha256: e for case in cases for e in case}.values())
    alone = 0
    for e in singles:
        matches = finder.answer([load_image(layout.store_dir / e.path)], objects=False)[0].best.matches
        alone += product(e) in [m.product.product_id for m in matches]
    # The same photos alone through the object search, as `predict` answers them (a sample: it is slow).
    sample = singles[::4] if len(singles) > 300 else singles
    first_object = objects_alone = 0
    for e in sample:
        answered_alone = finder.answer([load_image(layout.store_dir / e.path)])[0].objects
        objects_alone += len(answered_alone)
        first_object += product(e) in [m.product.product_id for m in answered_alone[0].matches]
    searched_alone = len(sample)
    multi_top3, single_top3 = found / objects, alone / len(singles)
    print(
        f"members: {', '.join(args.members)}; object when the top {args.object_top} are sure; "
        f"{len(cases)} mosaics of {objects} objects; {answers} answers"
    )
    print(f"objects found (product in that object's top 3): {100 * multi_top3:.1f}%")
    print(f"the same {len(singles)} photos alone, top 3: {100 * single_top3:.1f}%")
    print(
        f"{searched_alone} of them alone through the object search: the first object's top 3 "
        f"{100 * first_object / searched_alone:.1f}%, {objects_alone / searched_alone:.2f} objects per photo"
    )
    print(f"seconds per mosaic: {mosaic_seconds:.2f}")
    print(f"multi_object_ratio: {multi_top3 / single_top3:.3f}")


if __name__ == "__main__":
    main()
