"""Fine-tuning's gain on a CPU: one member's last blocks fine-tuned on cached activations
(training/top_tune.py) against the linear probe on the same member's frozen features, on the
grocery store's photos (trained on train, the epoch kept by val, scored on test). Side by side:
the top tuned on the centre crop's activations alone, and as top mode tunes it, with `--views`
augmented views of each training photo and the activation maps cropped at random.

All start from one pass of the photos through the network's lower blocks; the probe is the
head quick mode fits (L2 and balancing chosen on val), and each tuned top starts from it.

    .venv/bin/python -m tests.benchmarks.top_tune [--member efficientnet_lite0] [--top-blocks 5] [--epochs 8]
        [--views 2]
"""

from __future__ import annotations

import copy
import time

import torch

from models.efficientnet_lite import EfficientNetLite
from tests.benchmarks._grocery import GROCERY, grocery_photos
from tests.benchmarks._photos import show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser, sized
from tests.benchmarks.grocery_accuracy import grocery_snapshot
from training.augment import augment, normalize
from training.head import Rows, fit_head
from training.loading import PhotoRef, Photos, default_workers, photo_loader
from training.members import get_member
from training.metrics import scores
from training.photo_cache import PhotoCache
from training.top_tune import Split, activations, top_logits, tune_top


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--member", default="efficientnet_lite0")
    args.add_argument("--top-blocks", type=int, default=5, help="blocks fine-tuned (lite0: 5 = every 7x7 block)")
    args.add_argument("--epochs", type=int, default=sized(8, 2))
    args.add_argument("--image-size", type=int, default=sized(0, 64))
    args.add_argument("--views", type=int, default=2, help="augmented views of each training photo")
    opts = args.parse_args()
    show_progress()
    grocery_photos()  # exits with a reason when ../shared is absent
    snapshot = grocery_snapshot()
    member = get_member(opts.member)
    model = member.build(len(snapshot.classes), None, True)
    assert isinstance(model, EfficientNetLite), "the top is cut from an EfficientNet-Lite"
    split = Split(model, opts.top_blocks)
    size = member.input_size(opts.image_size)
    cache = PhotoCache(workdir("top-tune") / "photos", round(size * 1.14))
    started = time.monotonic()
    acts, labels = {}, {}
    for name in ("train", "val", "test"):
        examples = snapshot.split(name)
        photos = Photos([PhotoRef(GROCERY / e.path, e.sha256) for e in examples], [e.label for e in examples],
                        cache, round(size * 1.14), size)  # fmt: skip
        loader = photo_loader(photos, 64, default_workers(), False)
        acts[name] = activations(split, (normalize(x, member.mean, member.std) for x, _ in loader))
        labels[name] = torch.tensor([e.label for e in examples])
    lower_s = time.monotonic() - started
    print(f"{opts.member}: activations {tuple(acts['train'].shape[1:])} of {sum(len(v) for v in acts.values())} "
          f"photos in {lower_s:.0f} s")  # fmt: skip

    with torch.no_grad():
        model.eval()
        pooled = {name: torch.cat([split.pooled(a[i : i + 256].float()) for i in range(0, len(a), 256)])
                  for name, a in acts.items()}  # fmt: skip
    keys = {name: [f"{name}{i}" for i in range(len(labels[name]))] for name in acts}
    table = {k: pooled[name][i][None] for name in acts for i, k in enumerate(keys[name])}

    def rows(name: str) -> Rows:
        return Rows(keys[name], labels[name].tolist())

    head, chosen = fit_head(lambda ks: torch.stack([table[k] for k in ks]), rows("train"), rows("val"),
                            pooled["train"].shape[1], len(snapshot.classes), 40, 0.1, 0)  # fmt: skip
    model._fc.load_state_dict(head.state_dict())
    probe = scores(top_logits(split, acts["test"]).softmax(-1), labels["test"])
    print(f"probe ({chosen['probe_balance']}, L2 {chosen['probe_l2']}): test {probe}")

    gen = torch.Generator().manual_seed(1)
    side = round(size * 1.14)
    train_photos = snapshot.split("train")
    photos = Photos([PhotoRef(GROCERY / e.path, e.sha256) for e in train_photos], [e.label for e in train_photos],
                    cache, side, side)  # fmt: skip
    started = time.monotonic()

    def augmented() -> torch.Tensor:
        batches = photo_loader(photos, 64, default_workers(), False)
        return activations(split, (augment(x, size, member.mean, member.std, gen) for x, _ in batches))

    views = tuple(augmented() for _ in range(opts.views))
    views_s = time.monotonic() - started
    print(f"{opts.views} augmented views of the {len(train_photos)} training photos in {views_s:.0f} s")

    probe_state = copy.deepcopy(model.state_dict())
    tuned = {}
    for name, kept, crop in (("centre crop alone", (), False), (f"{opts.views} views, maps cropped", views, True)):
        model.load_state_dict(probe_state)
        result = tune_top(split, (acts["train"], labels["train"]), (acts["val"], labels["val"]), opts.epochs,
                          views=kept, crop=crop)  # fmt: skip
        tuned[name] = scores(top_logits(split, acts["test"]).softmax(-1), labels["test"])
        per_epoch = result.seconds / max(1, len(result.val_top1) - 1)
        print(f"{name}: top {opts.top_blocks} blocks tuned {len(result.val_top1) - 1} epochs ({per_epoch:.0f} s each), "
              f"val top-1 by epoch {result.val_top1}, kept epoch {result.best_epoch}: test {tuned[name]}")  # fmt: skip
    plain, default = tuned.values()
    gain = default["top1"] - probe["top1"]
    print(f"top_tune_gain: {gain:+.1f} points Top-1 over the probe ({probe['top1']:.1f} -> {plain['top1']:.1f} "
          f"on the centre crop alone -> {default['top1']:.1f} with views, maps cropped)")  # fmt: skip


if __name__ == "__main__":
    main()
