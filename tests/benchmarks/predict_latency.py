"""How long a shopper waits: seconds to answer one photo with the default three-member ensemble
once its models are loaded, beside loading them, on this machine (goal: under 1 s on a CPU).

Two answers of `Finder.answer` are timed: the whole photo as one object (the classifier merged with
the index), and what `reviewlens predict` does, every object of the photo searched (the whole photo,
the grid's regions and the detector's boxes, each embedded by every member and merged with an index
of the shop's photos).

    .venv/bin/python -m tests.benchmarks.predict_latency
"""

from __future__ import annotations

import statistics
import time

from core.settings import TrainConfig
from demo.shop.generate import GeneratorConfig
from search.answers import answer_files
from tests.benchmarks._photos import finder_over, shop_snapshot
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser, sized, train_settings
from training.bundle import Ensemble
from training.data import load_image
from training.train import device, train_snapshot


def main() -> None:
    parser(__doc__).parse_args()
    shop = GeneratorConfig(seed=9, n_categories=2, products_per_category=3, photos_per_product=sized(20, 10))
    snapshot, layout = shop_snapshot(workdir("predict"), shop)
    run_dir = train_snapshot(snapshot, TrainConfig(**train_settings()), layout)
    started = time.monotonic()
    ensemble = Ensemble.load(run_dir)
    load_s = time.monotonic() - started
    photos = [layout.store_dir / e.path for e in snapshot.split("test")][:10]
    finder = finder_over(ensemble, layout, snapshot, [e for e in snapshot.examples if e.split != "test"])
    finder.answer([load_image(photos[0])])  # the first call sets up torch's kernels
    times = []
    for photo in photos:
        started = time.monotonic()
        finder.answer([load_image(photo)], objects=False)
        times.append(time.monotonic() - started)
    found = []
    for photo in photos:
        started = time.monotonic()
        (answer,) = finder.answer([load_image(photo)])
        found.append((time.monotonic() - started, len(answer.objects)))
    started = time.monotonic()
    list(answer_files(finder, photos))
    folder_s = time.monotonic() - started
    print(f"on {device()}: {len(ensemble.members)} members at {[m.size for m in ensemble.members]} px")
    print(f"loading the models: {load_s:.2f} s; a folder of {len(photos)} photos: {folder_s:.2f} s")
    print(f"the whole photo as one object: {statistics.median(times):.3f} s per photo")
    print(f"objects per photo: {statistics.mean(n for _, n in found):.1f}")
    print(f"predict_seconds_per_photo: {statistics.median(t for t, _ in found):.3f}")


if __name__ == "__main__":
    main()
