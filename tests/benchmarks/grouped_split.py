"""Does the split keep a source whole? The grocery photos name no source, so one is made: each
photo is cut into 2 or 3 overlapping crops, as a team cuts several products' views out of one
picture, and the crops are imported with the photo as their `group`. Printed: the sources whose
crops lie in more than one split, with the group column and, beside it, without (each file its
own source, as before the column), and the leak count evaluate's report prints.

    .venv/bin/python -m tests.benchmarks.grouped_split [--photos N]
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageOps

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import DedupeConfig
from crawler.collection import import_collection
from curation.dedupe.grouping import dedupe
from tests.benchmarks._grocery import grocery_photos
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser, sized
from tests.db import run
from training.data import make_snapshot
from training.evaluate import split_audit


def cut(photos: list[Path], root: Path, seed: int) -> tuple[Path, dict[str, str]]:
    """Writes 2-3 crops of each photo and a CSV of them; returns the folder and each crop's photo."""
    rng, rows, source_of = random.Random(seed), [], {}
    out = root / "crops"
    out.mkdir(parents=True)
    for n, photo in enumerate(photos):
        product = photo.parent.name
        with Image.open(photo) as img:
            picture = ImageOps.exif_transpose(img).convert("RGB")
        w, h = picture.size
        for k in range(rng.choice((2, 3))):
            # Two thirds of the frame, from a corner or the middle: crops overlap, as views of one picture do.
            left, top = rng.choice((0, w // 6, w // 3)), rng.choice((0, h // 6, h // 3))
            name = f"{n:05d}-{k}.jpg"
            picture.crop((left, top, left + 2 * w // 3, top + 2 * h // 3)).save(out / name, quality=90)
            rows.append((name, product, f"photo-{n:05d}"))
            source_of[name] = f"photo-{n:05d}"
    with (out / "with-groups.csv").open("w", newline="") as f:
        w_ = csv.writer(f)
        w_.writerow(["path", "product", "group"])
        w_.writerows(rows)
    with (out / "without.csv").open("w", newline="") as f:
        w_ = csv.writer(f)
        w_.writerow(["path", "product"])
        w_.writerows(r[:2] for r in rows)
    return out, source_of


def straddling(root: Path, listing: Path, source_of: dict[str, str]) -> tuple[int, int, dict[str, object]]:
    """Imports `listing` into a data folder of its own, splits it; returns the sources in more than
    one split, the sources split, and evaluate's account of the split."""
    layout = Layout(root, database_url=None)
    import_collection(listing, layout)
    dedupe(DedupeConfig(), layout)
    snapshot = make_snapshot(layout, 0.2, 0.2, seed=0, min_photos=5)
    with open_manifest(layout) as m:
        rows = run(m, "SELECT sha256, photo_url FROM sources").fetchall()
    file_of = {r["sha256"]: r["photo_url"].rsplit("/", 1)[1] for r in rows}
    splits: dict[str, set[str]] = defaultdict(set)
    for e in snapshot.examples:
        splits[source_of[file_of[e.sha256]]].add(e.split)
    run_dir = root / "run"
    run_dir.mkdir()
    snapshot.save(run_dir / "snapshot.json")
    text, audit = split_audit(run_dir, layout)
    print(text)
    return sum(len(s) > 1 for s in splits.values()), len(splits), audit


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--photos", type=int, default=sized(5421, 40), help="grocery photos to cut (default: all)")
    opts = args.parse_args()
    photos = grocery_photos()
    photos = random.Random(0).sample(photos, min(opts.photos, len(photos)))
    root = workdir("grouped-split")
    crops, source_of = cut(photos, root, seed=0)
    print(f"{len(photos)} photos cut into {len(source_of)} crops")
    with_groups = straddling(root / "with", crops / "with-groups.csv", source_of)
    without = straddling(root / "without", crops / "without.csv", source_of)
    print(json.dumps({"with the group column": with_groups[2], "without": without[2]}))
    print(f"test photos sharing a group with training, as the report counts them: {with_groups[2]['sharing_a_group']}")
    print(f"grouped_split_straddling: {with_groups[0]} of {with_groups[1]} sources in more than one split "
          f"(without the group column: {without[0]})")  # fmt: skip


if __name__ == "__main__":
    main()
