"""Training: each ensemble member fine-tuned on a snapshot's train split, best epoch kept by val.

Laid out after torchvision's classification references: train_one_epoch, a member's training
loop, and train() writing a run folder whose model.pt keeps the settings that made it.
Evaluation is training/evaluate.py.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from core.errors import ReviewlensError
from core.layout import Layout
from core.settings import TrainConfig
from training.data import PhotoDataset, Snapshot, eval_transform, make_snapshot, train_transform
from training.members import Member, get_member
from training.runs import building_run

log = logging.getLogger(__name__)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class NotEnoughData(ReviewlensError):
    """Too few accepted photos to train on; the message says how many there are."""


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    dev: torch.device,
    label_smoothing: float,
) -> float:
    """Runs one pass over `loader`; returns the mean training loss."""
    model.train()
    total, n = 0.0, 0
    for x, y in loader:
        x, y = x.to(dev), y.to(dev)
        loss = nn.functional.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        n += len(y)
    return total / max(n, 1)


@torch.inference_mode()
def predict_proba(model: nn.Module, loader: DataLoader[Any], dev: torch.device) -> torch.Tensor:
    """Returns softmax probabilities (N, classes) for `loader`'s examples in order."""
    model.eval()
    return torch.cat([model(x.to(dev)).softmax(-1).cpu() for x, _ in loader]) if len(loader) else torch.empty(0)


def top1(probs: torch.Tensor, labels: list[int]) -> float:
    if not labels:
        return 0.0
    return float((probs.argmax(-1) == torch.tensor(labels)).float().mean())


def train_member(
    member: Member, snapshot: Snapshot, layout: Layout, config: TrainConfig, dev: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tunes one member; returns the model at its best validation epoch and its history."""
    weights = config.weights.get(member.name)
    model = member.build(len(snapshot.classes), Path(weights) if weights else None, True).to(dev)
    keep_size = int(config.image_size * config.resize_ratio)
    train_set = PhotoDataset(
        snapshot.split("train"),
        layout.store_dir,
        keep_size,
        train_transform(config.image_size, member.mean, member.std),
    )
    val_set = PhotoDataset(
        snapshot.split("val"),
        layout.store_dir,
        keep_size,
        eval_transform(config.image_size, config.resize_ratio, member.mean, member.std),
    )
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(train_set) > config.batch_size,
    )
    val_loader = DataLoader(val_set, batch_size=config.batch_size * 2)
    head = [p for n, p in model.named_parameters() if n.startswith(member.head_prefixes)]
    body = [p for n, p in model.named_parameters() if not n.startswith(member.head_prefixes)]
    optimizer = torch.optim.AdamW(
        [{"params": head, "lr": config.lr}, {"params": body, "lr": config.lr * config.backbone_lr_scale}],
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    best: tuple[float, dict[str, torch.Tensor]] = (-1.0, {})
    history = []
    for epoch in range(config.epochs):
        started = time.monotonic()
        loss = train_one_epoch(model, train_loader, optimizer, dev, config.label_smoothing)
        scheduler.step()
        val_top1 = top1(predict_proba(model, val_loader, dev), val_set.labels)
        history.append(
            {
                "epoch": epoch,
                "loss": round(loss, 4),
                "val_top1": round(val_top1, 4),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        log.info("%s epoch %d: loss %.3f, val top-1 %.3f", member.name, epoch, loss, val_top1)
        if val_top1 > best[0]:
            best = (val_top1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[1])
    return model, {"best_val_top1": best[0], "epochs": history}


def train(config: TrainConfig, layout: Layout) -> Path:
    """Snapshots the accepted photos and trains every member; returns the run folder.

    The run folder holds model.pt (every member's weights, the classes and the config that made
    them) and snapshot.json (the photos and their split).
    """
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    members = [get_member(name) for name in config.members]  # unknown names fail before any work
    snapshot = make_snapshot(layout, config.val_share, config.test_share, config.seed, config.min_photos)
    if len(snapshot.classes) < 2:
        raise NotEnoughData(
            f"{len(snapshot.classes)} products have {config.min_photos} or more accepted photos: "
            "at least 2 are needed to train"
        )
    dev = device()
    with building_run(layout, snapshot.snapshot_id) as (work_dir, run_dir):
        snapshot.save(work_dir / "snapshot.json")
        bundle: dict[str, Any] = {
            "classes": [asdict(c) for c in snapshot.classes],
            "snapshot_id": snapshot.snapshot_id,
            "config": {**asdict(config), "weights": dict(config.weights)},
            "members": {},
        }
        for member in members:
            model, history = train_member(member, snapshot, layout, config, dev)
            bundle["members"][member.name] = {"state_dict": model.cpu().state_dict(), "history": history}
        torch.save(bundle, work_dir / "model.pt")
    return run_dir
