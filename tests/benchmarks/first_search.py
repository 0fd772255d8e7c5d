"""Time to first search: a new shop of 2,000 products with one catalog photo each, from `import` to
a `predict` answer, as a person types the commands (goal: at most 10 minutes on 2 cores).

The shop is the demo shop's generator at 2,000 products; its catalog photos (each product alone on
white) are listed in a CSV with `catalog=yes`. Timed, each a process of its own: `reviewlens import`
(stored, accepted, deduplicated), `reviewlens index` (no trained model: the members' pretrained
bodies), and `reviewlens predict` on one customer's photo of a product. Beside the time: whether
the product is among the answer's three.

    .venv/bin/python -m tests.benchmarks.first_search [--products 2000] [--members ...]
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

from core.settings import TrainConfig
from demo.shop.generate import GeneratorConfig, generate, load_catalog, load_truth
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
    per_category = 50 if options.products >= 100 else options.products // 2
    shop = generate(
        GeneratorConfig(
            seed=21,
            n_categories=max(1, options.products // per_category),
            products_per_category=per_category,
            photos_per_product=1,
            catalog_photos=True,
        ),
        root / "shop",
    )
    products = load_catalog(shop)
    listing = root / "catalog.csv"
    with listing.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["path", "product", "name", "catalog"])
        rows.writerows([shop / "catalog" / f"{p.product_id}.jpg", p.product_id, p.name, "yes"] for p in products)
    # A customer's photo of one product: the shop's first clean review photo (one product, large).
    truth = next(t for t in load_truth(shop).values() if t.kind == "clean")
    photo = shop / "photos" / f"{truth.photo_id}.jpg"
    data = ["--data-dir", str(root / "data")]

    import_s, _ = reviewlens("import", str(listing), *data)
    index_s, indexed = reviewlens("index", *data, "--members", *options.members)
    predict_s, answered = reviewlens("predict", str(photo), "--json", *data)
    first = json.loads(answered)[0]["objects"][0]["products"]
    found = str(truth.product_id) in [p["product_id"] for p in first]
    total = import_s + index_s + predict_s
    print(f"{len(products)} products, one catalog photo each; members {', '.join(options.members)}")
    print(indexed.strip())
    print(f"import {import_s:.1f} s, index {index_s:.1f} s, predict {predict_s:.1f} s")
    print(f"the customer's photo's product among the three answered: {'yes' if found else 'no'}")
    print(f"first_search_minutes: {total / 60:.2f}")


if __name__ == "__main__":
    main()
