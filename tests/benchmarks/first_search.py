"""Time to first search: a new shop of 2,000 products with one catalog photo each, from `import` to
a `predict` answer, as a person types the commands (goal: at most 10 minutes on 2 cores).

The shop's products are drawn as the demo shop draws its own (a silhouette filled with a pattern),
each in three colours of its own, so 2,000 catalog photos (each product alone on white) are 2,000
photos; they are listed in a CSV with `catalog=yes`. Timed, each a process of its own: `reviewlens
import` (stored, accepted, deduplicated), `reviewlens index` (no trained model: the members'
pretrained bodies), and `reviewlens predict` on one customer's photo of a product (the product
smaller, on a coloured wall). Beside the time: whether the product is among the answer's three.

    .venv/bin/python -m tests.benchmarks.first_search [--products 2000] [--members ...]
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import time

from PIL import Image

from core.settings import TrainConfig
from demo.shop.render import PATTERNS, SHAPES, draw_product
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser, sized


def reviewlens(*words: str) -> tuple[float, str]:
    """Runs the command as a person would; its wall time and what it printed."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "reviewlens.cli", *words], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"reviewlens {' '.join(words)} failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - started, done.stdout


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--products", type=int, default=sized(2000, 8))
    args.add_argument("--members", nargs="+", default=list(sized(TrainConfig().members, ["efficientnet_lite0"])))
    options = args.parse_args()
    root = workdir("first-search")
    rng = random.Random(21)
    catalog = root / "catalog"
    catalog.mkdir()
    shapes, patterns = sorted(SHAPES), sorted(PATTERNS)
    wanted = options.products // 2  # the product a customer photographs
    for i in range(options.products):
        colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(3)]
        sprite = draw_product(shapes[i % len(shapes)], patterns[(i // len(shapes)) % len(patterns)], colours, 300)
        side = max(sprite.size) + 60
        photo = Image.new("RGB", (side, side), "white")
        photo.paste(sprite, ((side - sprite.width) // 2, (side - sprite.height) // 2), sprite)
        photo.save(catalog / f"{i}.jpg", quality=90)
        if i == wanted:
            asked = sprite.resize((sprite.width * 2 // 3, sprite.height * 2 // 3))
    listing = root / "catalog.csv"
    with listing.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["path", "product", "name", "catalog"])
        rows.writerows([catalog / f"{i}.jpg", i, f"product {i}", "yes"] for i in range(options.products))
    # A customer's photo of that product: smaller, off centre, on a coloured wall.
    photo_path = root / "customer.jpg"
    wall = Image.new("RGB", (480, 360), (182, 170, 150))
    wall.paste(asked, (40, 360 - asked.height - 20), asked)
    wall.save(photo_path, quality=90)
    data = ["--data-dir", str(root / "data")]

    import_s, _ = reviewlens("import", str(listing), *data)
    index_s, indexed = reviewlens("index", *data, "--members", *options.members)
    predict_s, answered = reviewlens("predict", str(photo_path), "--json", *data)
    found = any(str(wanted) in [p["product_id"] for p in o["products"]] for o in json.loads(answered)[0]["objects"])
    total = import_s + index_s + predict_s
    print(f"{options.products} products, one catalog photo each; members {', '.join(options.members)}")
    print(indexed.strip())
    print(f"import {import_s:.1f} s, index {index_s:.1f} s, predict {predict_s:.1f} s")
    print(f"the customer's photo's product among the three answered for one of its objects: {'yes' if found else 'no'}")
    print(f"first_search_minutes: {total / 60:.2f}")


if __name__ == "__main__":
    main()
