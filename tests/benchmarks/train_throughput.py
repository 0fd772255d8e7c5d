"""Is the model kept busy? Photos/s of the real fine-tuning loop over photos/s of the same model's
training step on a batch already resident on the device, in one run on one machine.

The loop reads photos from the on-disk cache in loader workers, which on a CPU also augment them
(on a GPU, uint8 batches are augmented on the device); the resident step is forward, backward and
optimizer step on one augmented batch that never leaves the device, so the ratio is the share of
the model's speed the loading lets through (goal: >= 0.9 on a CPU, >= 0.7 on a GPU).

    .venv/bin/python -m tests.benchmarks.train_throughput [--image-size 128] [--photos-per-product 40]
"""

from __future__ import annotations

import time

import torch

from core.settings import TrainConfig
from demo.shop.generate import GeneratorConfig
from tests.benchmarks._photos import shop_snapshot, show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from training.augment import augment
from training.finetune import autocast, train_mode
from training.members import get_member
from training.train import device, train_snapshot


def resident_rate(member_name: str, size: int, batch: int, steps: int, classes: int) -> float:
    """Photos/s of forward + backward + step on one augmented batch that never leaves the device."""
    dev = device()
    member = get_member(member_name)
    model = member.build(classes, None, True).to(dev).to(memory_format=torch.channels_last)
    train_mode(model)  # as the loop trains: batch-norm statistics frozen
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    resize = round(size * TrainConfig().resize_ratio)
    photos = torch.randint(0, 256, (batch, 3, resize, resize), dtype=torch.uint8, device=dev)
    x = augment(photos, size, member.mean, member.std, torch.Generator(device=dev).manual_seed(0))
    y = torch.randint(0, classes, (batch,), device=dev)

    def step() -> None:
        with autocast(dev):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    started = time.monotonic()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.monotonic() - started)


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--member", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=sized(128, 64))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photos-per-product", type=int, default=sized(80, 8))
    parser.add_argument("--epochs", type=int, default=sized(5, 1))
    args = parser.parse_args()
    show_progress()
    root = workdir("throughput")
    shop = GeneratorConfig(seed=3, n_categories=2, products_per_category=4, photos_per_product=args.photos_per_product)
    snapshot, layout = shop_snapshot(root, shop)
    config = TrainConfig(
        mode="full",
        members=(args.member,),
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.epochs,
        head_epochs=5,
    )
    n_train = len(snapshot.split("train"))
    steps = max(5, 2 * (n_train // args.batch_size))

    def resident() -> float:
        return resident_rate(args.member, args.image_size, args.batch_size, steps, len(snapshot.classes))

    # Measured before and after the loop, and averaged: a shared machine's speed drifts.
    before = resident()
    run_dir = train_snapshot(snapshot, config, layout)
    resident_mean = (before + resident()) / 2
    history = torch.load(run_dir / "model.pt", weights_only=True)["members"][args.member]["history"]["epochs"]
    # The first epoch also starts the workers and warms the caches: the steady state is after it.
    steady = sorted(e["photos_per_s"] for e in history[2:]) or [history[-1]["photos_per_s"]]
    loop = steady[len(steady) // 2]
    print(f"on {device()}: {n_train} training photos at {args.image_size} px, batches of {args.batch_size}")
    print(f"training loop: {loop:.1f} photos/s, median of epochs 2+ ({[e.get('photos_per_s') for e in history[1:]]})")
    print(f"resident batch: {resident_mean:.1f} photos/s")
    print(f"train_throughput_ratio: {loop / resident_mean:.2f}")


if __name__ == "__main__":
    main()
