"""Full mode: the whole network fine-tuned from its probe-initialized head.

The torchvision references' loop, with warm-up then cosine decay per step, early stopping on
validation top-1 with a patience, an epoch budget and a wall-clock deadline. On a GPU, batches
travel as uint8 and are augmented there, under bf16 autocast, channels-last.

Beside the classifier's cross-entropy, the body's features also learn the search embedding's
own objective (training/embedding.py): a normalised softmax against one proxy per product. The
classifier alone shapes features that separate the trained products; the proxies' cosine loss
shapes them so that nearest photos share a product, which is what finds products the classifier
never saw (tests/benchmarks/open_set_finetuned.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from training.augment import augment, normalize
from training.embedding import DIM, SCALE
from training.members import Member
from training.progress import Bar, duration, log


@dataclass(frozen=True)
class Schedule:
    epochs: int
    warmup_epochs: int
    patience: int
    deadline: float  # time.monotonic() after which no epoch starts


def autocast(dev: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a GPU; full precision on a CPU, where bf16 is slower on most chips."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning rate's share of its peak at `step`: linear warm-up, then cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def view_logits(
    model: nn.Module, loader: DataLoader[Any], member: Member, dev: torch.device, mirror: bool = True
) -> torch.Tensor:
    """(N, views, C) logits of every photo of `loader` (and, with `mirror`, of its mirror image), in order."""
    model.eval()
    out = []
    for x, _ in loader:
        x = normalize(x.to(dev, non_blocking=True), member.mean, member.std)
        with autocast(dev):
            views = model(torch.cat([x, x.flip(-1)]) if mirror else x).float()
        out.append(views.view(1 + mirror, len(x), -1).transpose(0, 1).cpu())
    return torch.cat(out) if out else torch.empty(0, 1 + mirror, 0)


def train_mode(model: nn.Module) -> None:
    """Training mode with batch-norm statistics frozen: the probe's head was fitted on features made
    with the pretrained statistics, and a small shop's batches are too few and small to replace them."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class ProxyLoss(nn.Module):
    """Normalised softmax on the body's features: a linear map to DIM, then the cosine to one
    learned proxy per product, times SCALE, under cross-entropy (Zhai and Wu, 2019)."""

    def __init__(self, width: int, n_classes: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.project = nn.Linear(width, DIM)
        self.proxies = nn.Parameter(torch.randn(n_classes, DIM, generator=generator) * 0.01)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z = nn.functional.normalize(self.project(features), dim=1)
        cosine = z @ nn.functional.normalize(self.proxies, dim=1).T
        return nn.functional.cross_entropy(SCALE * cosine, labels)


def _batches(loader: DataLoader[Any], dev: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in loader:
        yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)


def finetune(
    model: nn.Module,
    member: Member,
    size: int,
    train_loader: DataLoader[Any],
    val_loader: DataLoader[Any],
    val_labels: torch.Tensor,
    lr: float,
    backbone_lr_scale: float,
    weight_decay: float,
    label_smoothing: float,
    schedule: Schedule,
    dev: torch.device,
    seed: int,
    embedding_weight: float = 0.0,
) -> tuple[nn.Module, torch.Tensor, list[dict[str, float]]]:
    """Fine-tunes `model` in place; returns it at its best validation epoch, that epoch's
    validation logits (N, 2, C) for the photos and their mirror images, and one record per
    epoch. Epoch 0 is the probe as it came. With `embedding_weight`, the ProxyLoss on the
    head's input joins the loss at that weight."""
    model.to(dev).to(memory_format=torch.channels_last)
    head = [p for n, p in model.named_parameters() if n.startswith(member.head_prefixes)]
    body = [p for n, p in model.named_parameters() if not n.startswith(member.head_prefixes)]
    final = model.get_submodule(member.head)
    assert isinstance(final, nn.Linear)
    proxy_loss = ProxyLoss(final.in_features, final.out_features, seed).to(dev)
    features: list[torch.Tensor] = []  # the head's input of the training step, when the proxies learn
    if embedding_weight:
        head += list(proxy_loss.parameters())
    hook = final.register_forward_pre_hook(
        lambda _m, args: features.append(args[0]) if embedding_weight and final.training else None
    )
    optimizer = torch.optim.AdamW(
        [{"params": head, "lr": lr}, {"params": body, "lr": lr * backbone_lr_scale}], weight_decay=weight_decay
    )
    steps = max(1, len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, schedule.warmup_epochs * steps, schedule.epochs * steps)
    )
    gen = torch.Generator(device=dev).manual_seed(seed)

    def score() -> tuple[float, torch.Tensor]:
        logits = view_logits(model, val_loader, member, dev)
        top1 = float((logits[:, 0].argmax(-1) == val_labels).float().mean()) if len(val_labels) else 0.0
        return top1, logits

    best_top1, best_logits = score()
    best_state = copy.deepcopy(model.state_dict())
    history = [{"epoch": 0, "val_top1": round(best_top1, 4)}]
    log.info("%s fine-tuning from the probe: val top-1 %.3f", member.name, best_top1)
    since_best, last_epoch_s = 0, 0.0
    for epoch in range(1, schedule.epochs + 1):
        if time.monotonic() + last_epoch_s > schedule.deadline:
            log.info("%s: the time budget ends before another epoch would; stopped at %d", member.name, epoch - 1)
            break
        started = time.monotonic()
        train_mode(model)
        total, seen = 0.0, 0
        with Bar(len(train_loader.dataset), f"{member.name} epoch {epoch}") as bar:  # type: ignore[arg-type]
            for x, y in _batches(train_loader, dev):
                if x.dtype == torch.uint8:  # not augmented by the loader: augmented here, on the device
                    x = augment(x, size, member.mean, member.std, gen)
                with autocast(dev):
                    out = model(x)
                    loss = nn.functional.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
                    if features:
                        loss = loss + embedding_weight * proxy_loss(features.pop().float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * len(y)
                seen += len(y)
                bar.update(len(y))
        train_s = time.monotonic() - started
        top1, logits = score()
        last_epoch_s = time.monotonic() - started
        history.append(
            {
                "epoch": epoch,
                "loss": round(total / max(seen, 1), 4),
                "val_top1": round(top1, 4),
                "seconds": round(last_epoch_s, 1),
                # Training steps only (validation excluded): what the loader lets the model do.
                "photos_per_s": round(seen / max(train_s, 1e-9), 1),
            }
        )
        left = (schedule.epochs - epoch) * last_epoch_s
        log.info(
            "%s epoch %d/%d: loss %.3f, val top-1 %.3f, %.0f photos/s, %s (at most %s more)",
            member.name,
            epoch,
            schedule.epochs,
            total / max(seen, 1),
            top1,
            seen / max(train_s, 1e-9),
            duration(last_epoch_s),
            duration(min(left, max(0.0, schedule.deadline - time.monotonic()))),
        )
        if top1 > best_top1:
            best_top1, best_logits, since_best = top1, logits, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best >= schedule.patience:
                log.info("%s: no gain on validation for %d epochs; stopping", member.name, since_best)
                break
    hook.remove()
    model.load_state_dict(best_state)
    return model, best_logits, history
