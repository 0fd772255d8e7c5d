"""The linear probe: a member's final layer trained on its frozen, cached features.

A logistic regression on standardized features: solved to convergence by full-batch L-BFGS when
the features fit in memory, else by AdamW on minibatches read from disk as needed. The fitted
layer is folded back onto the raw features, so it drops into the network as its head unchanged.

Its settings are chosen on validation: the L2 strength, and how products with few photos are
weighed. Plain log-loss lets the products with many photos win every close call; a class-balanced
loss, or logit adjustment (subtracting each product's log share of the photos from its score),
gives each product the same say. One of them is kept where it raises validation macro-F1 without
lowering Top-1. Once chosen, quick mode fits the settings again on train and validation together
(training/train.py).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from training.features import VIEWS
from training.metrics import macro_f1, topk

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

    def __add__(self, other: Rows) -> Rows:
        return Rows(self.shas + other.shas, self.labels + other.labels)


@dataclass(frozen=True)
class HeadSettings:
    """What validation chose: the L2 strength, and how products with few photos are weighed."""

    l2: float
    balance: str = "none"  # 'none', 'loss' (class-balanced weights) or 'adjust' (logit adjustment)


BALANCES = ("none", "loss", "adjust")


class FeatureSource:
    """Feature batches by row, from memory when small, else read from the store each time."""

    def __init__(self, read: Callable[[list[str]], torch.Tensor], rows: Rows, row_bytes: int) -> None:
        self.read, self.rows = read, rows
        self.held = read(rows.shas) if len(rows.shas) * row_bytes <= IN_MEMORY_BYTES else None

    @functools.cached_property
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The features' mean and spread, read once however many heads are fitted on them."""
        return _moments(self)

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


def _counts(labels: list[int], n_classes: int) -> torch.Tensor:
    return torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=n_classes).float()


def _class_weights(labels: list[int], n_classes: int, balance: str) -> torch.Tensor | None:
    """Each product's weight in a class-balanced loss: every product present weighs the same in all."""
    if balance != "loss":
        return None
    counts = _counts(labels, n_classes)
    present = counts > 0
    weights = torch.zeros(n_classes)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights


def _train_in_memory(
    train: FeatureSource,
    mean: torch.Tensor,
    std: torch.Tensor,
    n_classes: int,
    l2: float,
    class_weights: torch.Tensor | None = None,
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
        loss = nn.functional.cross_entropy(layer(x), y, weight=class_weights) + l2 * layer.weight.pow(2).sum()
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
    class_weights: torch.Tensor | None = None,
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
            loss = nn.functional.cross_entropy(
                layer(x), labels[index], weight=class_weights, label_smoothing=label_smoothing
            )
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


def _adjusted(layer: nn.Linear, labels: list[int], n_classes: int) -> nn.Linear:
    """Logit adjustment: each product's score lowered by its log share of the training photos."""
    prior = (_counts(labels, n_classes) + 1) / (len(labels) + n_classes)  # a product never seen is rare, not absent
    with torch.no_grad():
        layer.bias.sub_(prior.log())
    return layer


@dataclass(frozen=True)
class Probe:
    """How a head is fitted: everything but the photos and the settings."""

    read: Callable[[list[str]], torch.Tensor]
    dim: int
    n_classes: int
    epochs: int
    label_smoothing: float
    seed: int

    def source(self, rows: Rows) -> FeatureSource:
        return FeatureSource(self.read, rows, VIEWS * 2 * self.dim)

    def fit(self, train: FeatureSource, settings: HeadSettings) -> nn.Linear:
        """The head with `settings` on `train`'s photos, taking raw features."""
        mean, std = train.moments
        weights = _class_weights(train.rows.labels, self.n_classes, settings.balance)
        if train.held is not None:
            fitted = _train_in_memory(train, mean, std, self.n_classes, settings.l2, weights)
        else:
            fitted = _train_streamed(
                train, mean, std, self.n_classes, settings.l2, self.epochs, self.label_smoothing, self.seed, weights
            )
        layer = _fold(fitted, mean, std)
        return _adjusted(layer, train.rows.labels, self.n_classes) if settings.balance == "adjust" else layer


def _val_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """Top-1, macro-F1 (in percent, as the report gives them) and log-loss of validation logits (N, C)."""
    if len(labels) == 0:
        return 0.0, 0.0, 0.0
    f1 = macro_f1(logits.argmax(-1), labels, logits.shape[1])
    return topk(logits, labels, 1), f1, float(nn.functional.cross_entropy(logits, labels))


def fit_head(
    read: Callable[[list[str]], torch.Tensor],
    train: Rows,
    val: Rows,
    dim: int,
    n_classes: int,
    epochs: int,
    label_smoothing: float,
    seed: int,
    balances: tuple[str, ...] = BALANCES,
) -> tuple[nn.Linear, dict[str, float | str]]:
    """The probe whose settings do best on validation; its layer, fitted on `train`, takes raw features.

    The L2 strength is chosen with plain log-loss, by Top-1 then log-loss. A way of balancing the
    products (of `balances`) then replaces plain log-loss where it raises validation macro-F1 at
    no cost in Top-1.
    """
    probe = Probe(read, dim, n_classes, epochs, label_smoothing, seed)
    train_src, val_src = probe.source(train), probe.source(val)
    val_labels = torch.tensor(val.labels, dtype=torch.long)
    tried: dict[HeadSettings, tuple[nn.Linear, tuple[float, float, float]]] = {}

    def score(settings: HeadSettings, layer: nn.Linear) -> None:
        tried[settings] = layer, _val_scores(logits_of(layer, val_src).mean(1), val_labels)
        log.info("probe %s: val top-1 %.1f, macro-F1 %.1f, nll %.3f", settings, *tried[settings][1])

    plains = {l2: probe.fit(train_src, HeadSettings(l2)) for l2 in L2_GRID} if set(balances) - {"loss"} else {}
    for l2, layer in plains.items():
        if "none" in balances:
            score(HeadSettings(l2), layer)
        if "adjust" in balances:  # no fit of its own: the plain head, shifted
            score(HeadSettings(l2, "adjust"), _adjusted(_copy(layer), train.labels, n_classes))
    best_plain = max((s for s in tried if s.balance == "none"), key=lambda s: (tried[s][1][0], -tried[s][1][2]),
                     default=None)  # fmt: skip
    if "loss" in balances:  # a fit per strength: at the plain head's, unless it alone is asked
        for l2 in [best_plain.l2] if best_plain else L2_GRID:
            score(HeadSettings(l2, "loss"), probe.fit(train_src, HeadSettings(l2, "loss")))
    floor = tried[best_plain][1][0] if best_plain else 0.0
    # Ties keep the plain head: a balancing that changes nothing on validation is not worth its doubt.
    chosen = max(
        (s for s in tried if tried[s][1][0] >= floor),
        key=lambda s: (tried[s][1][1], s == best_plain, -tried[s][1][2]),
    )
    top1, f1, _ = tried[chosen][1]
    return tried[chosen][0], {
        "probe_val_top1": round(top1 / 100, 4),  # shares, as the training record has kept them
        "probe_val_macro_f1": round(f1 / 100, 4),
        "probe_l2": chosen.l2,
        "probe_balance": chosen.balance,
    }


def _copy(layer: nn.Linear) -> nn.Linear:
    copy = nn.Linear(layer.in_features, layer.out_features)
    copy.load_state_dict(layer.state_dict())
    return copy


def settings_of(record: dict[str, float | str]) -> HeadSettings:
    return HeadSettings(float(record["probe_l2"]), str(record["probe_balance"]))
