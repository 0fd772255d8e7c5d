"""Accuracy on real photos: members fine-tuned on grocery-store train+val, scored on its test split.

The grocery store's products stand in for a shop's: Top-1 / Top-3 per member and for the
ensemble on its 2,485 test photos, with the training code the pipeline uses.

    .venv/bin/python -m tests.benchmarks.grocery_accuracy [--members efficientnet_lite0 ...] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader

from core.layout import Layout
from core.settings import TrainConfig
from tests.benchmarks._grocery import GROCERY, grocery_photos
from tests.benchmarks._shop import workdir
from training.data import Example, PhotoDataset, ProductClass, Snapshot, eval_transform
from training.evaluate import markdown_table, topk
from training.members import get_member
from training.train import device, predict_proba, train_member


def _examples() -> tuple[list[ProductClass], list[Example]]:
    names = {}
    for line in (GROCERY / "classes.csv").read_text().splitlines()[1:]:
        cols = line.split(",")
        names[int(cols[1])] = cols[0]
    examples = []
    for split, file in (("train", "train.txt"), ("val", "val.txt"), ("test", "test.txt")):
        for line in (GROCERY / file).read_text().splitlines():
            if line.strip():
                path, label, _ = (c.strip() for c in line.split(","))
                examples.append(Example(path, path.lstrip("/"), path, int(label), split))
    classes = [ProductClass(str(i), names[i], "") for i in sorted(names)]
    return classes, examples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", nargs="+", default=["efficientnet_lite0"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=160)
    args = parser.parse_args()
    grocery_photos()  # exits with a reason when ../shared is absent
    classes, examples = _examples()
    # The training code reads photos from a layout's store: point one at the dataset.
    root = workdir("grocery")
    os.symlink(GROCERY, root / "store")
    layout = Layout(root)
    snapshot = Snapshot(
        "grocery", classes, [e for e in examples if e.split != "test"] + [e for e in examples if e.split == "test"]
    )
    config = TrainConfig(members=tuple(args.members), epochs=args.epochs, image_size=args.image_size)
    dev = device()
    test = snapshot.split("test")
    labels = torch.tensor([e.label for e in test])
    results, probs = {}, {}
    for name in args.members:
        started = time.monotonic()
        member = get_member(name)
        model, _ = train_member(member, snapshot, layout, config, dev)
        test_set = PhotoDataset(
            test,
            layout.store_dir,
            int(config.image_size * config.resize_ratio),
            eval_transform(config.image_size, config.resize_ratio, member.mean, member.std),
        )
        probs[name] = predict_proba(model, DataLoader(test_set, batch_size=128), dev)
        results[name] = {"top1": topk(probs[name], labels, 1), "top3": topk(probs[name], labels, 3)}
        print(f"{name}: {results[name]} in {time.monotonic() - started:.0f}s on {dev}", flush=True)
    ensemble = torch.stack(list(probs.values())).mean(0)
    results["ensemble"] = {"top1": topk(ensemble, labels, 1), "top3": topk(ensemble, labels, 3)}
    print(markdown_table(results, len(test), len(classes)))
    print(f"grocery_ensemble_top1: {results['ensemble']['top1']:.1f}")


if __name__ == "__main__":
    main()
