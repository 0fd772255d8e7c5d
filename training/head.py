"""The linear probe: a member's final layer trained on its frozen, cached features.

A logistic regression on standardized features, its L2 strength chosen on validation: solved to
convergence by full-batch L-BFGS when the features fit in memory, else by AdamW on minibatches
read from disk as needed. The fitted layer is folded back onto the raw features, so it drops
into the network as its head unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from training.features import VIEWS

log = logging.getLogger(__name__)

# L2 strengths tried (on the summed squared weights); the probe's one choice made on validation.
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
LBFGS_ITERATIONS = 300
HEAD_LR = 3e-3
HEAD_BATCH = 256
# Features up to this size are read into memory once; beyond, each batch is read from disk.
IN_MEMORY_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Rows:
    """Photos of one split as the probe sees them: their hashes and labels."""

    shas: list[str]
    labels: list[int]


class FeatureSource:
    """Feature batches by row, from memory when small, else read from the store each time."""

    def __init__(self, read: Callable[[list[str]], torch.Tensor], rows: Rows, row_bytes: int) -> None:
        self.read, self.rows = read, rows
        self.held = read(rows.shas) if len(rows.shas) * row_bytes <= IN_MEMORY_BYTES else None

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        if self.held is not None:
            return self.held[index]
        return self.read([self.rows.shas[int(i)] for i in index])

    def all_batches(self) -> list[torch.Tensor]:
        n = len(self.rows.shas)
        return [self.batch(torch.arange(i, min(i + 4 * HEAD_BATCH, n))) for i in range(0, n, 4 * HEAD_BATCH)]


def _moments(source: FeatureSource) -> tuple[torch.Tensor, torch.Tensor]:
    total, total_sq, n = torch.zeros(()), torch.zeros(()), 0
    for f in source.all_batches():
        flat = f.flatten(0, 1)
        total = total + flat.sum(0)
        total_sq = total_sq + (flat**2).sum(0)
        n += len(flat)
    mean = total / n
    std = (total_sq / n - mean**2).clamp(min=1e-6).sqrt()
    return mean, std


def _train_in_memory(
    train: FeatureSource, mean: torch.Tensor, std: torch.Tensor, n_classes: int, l2: float
) -> nn.Linear:
    assert train.held is not None
    x = ((train.held - mean) / std).flatten(0, 1)  # every stored view is a training example
    y = torch.tensor(train.rows.labels).repeat_interleave(train.held.shape[1])
    layer = nn.Linear(x.shape[1], n_classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=LBFGS_ITERATIONS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(layer(x), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer


def _train_streamed(
    train: FeatureSource,
    mean: torch.Tensor,
    std: torch.Tensor,
    n_classes: int,
    l2: float,
    epochs: int,
    label_smoothing: float,
    seed: int,
) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(mean.numel(), n_classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    labels = torch.tensor(train.rows.labels)
    n = len(labels)
    steps = epochs * math.ceil(n / HEAD_BATCH)
    opt = torch.optim.AdamW(layer.parameters(), lr=HEAD_LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, HEAD_LR, total_steps=steps, pct_start=0.1)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, HEAD_BATCH):
            index = order[i : i + HEAD_BATCH]
            feats = train.batch(index)
            view = torch.randint(feats.shape[1], (len(index),), generator=gen)
            x = (feats[torch.arange(len(index)), view] - mean) / std
            loss = nn.functional.cross_entropy(layer(x), labels[index], label_smoothing=label_smoothing)
            loss = loss + l2 * layer.weight.pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return layer


@torch.no_grad()
def logits_of(layer: nn.Linear, source: FeatureSource) -> torch.Tensor:
    """(N, views, classes): the head's logits for every photo of `source` and each stored view."""
    return torch.cat([layer(f) for f in source.all_batches()]) if source.rows.shas else torch.empty(0, VIEWS, 0)


def _fold(layer: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """The same layer on raw features: W (x - m) / s + b = (W / s) x + (b - (W / s) m)."""
    raw = nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        raw.weight.copy_(layer.weight / std)
        raw.bias.copy_(layer.bias - raw.weight @ mean)
    return raw


def fit_head(
    read: Callable[[list[str]], torch.Tensor],
    train: Rows,
    val: Rows,
    dim: int,
    n_classes: int,
    epochs: int,
    label_smoothing: float,
    seed: int,
) -> tuple[nn.Linear, dict[str, float]]:
    """The probe with the L2 strength that does best on validation; its layer takes raw features."""
    row_bytes = VIEWS * 2 * dim
    train_src, val_src = FeatureSource(read, train, row_bytes), FeatureSource(read, val, row_bytes)
    mean, std = _moments(train_src)
    val_labels = torch.tensor(val.labels)
    best: tuple[tuple[float, float], nn.Linear, float] | None = None
    for l2 in L2_GRID:
        if train_src.held is not None:
            fitted = _train_in_memory(train_src, mean, std, n_classes, l2)
        else:
            fitted = _train_streamed(train_src, mean, std, n_classes, l2, epochs, label_smoothing, seed)
        layer = _fold(fitted, mean, std)
        logits = logits_of(layer, val_src).mean(1)
        top1 = float((logits.argmax(-1) == val_labels).float().mean()) if len(val_labels) else 0.0
        nll = float(nn.functional.cross_entropy(logits, val_labels)) if len(val_labels) else 0.0
        log.info("probe l2 %g: val top-1 %.3f, nll %.3f", l2, top1, nll)
        if best is None or (top1, -nll) > best[0]:
            best = ((top1, -nll), layer, l2)
    assert best is not None
    return best[1], {"probe_val_top1": round(best[0][0], 4), "probe_l2": best[2]}
