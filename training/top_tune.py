"""Fine-tuning the top of an EfficientNet-Lite where only a CPU is at hand.

The photos run once through the frozen lower blocks and their activations are kept (half
precision, on disk: training/features.activation_store, so a retrain decodes only new photos);
each epoch then runs only the last blocks, the head convolution and the
classifier, a fraction of the network's cost. The classifier starts from the linear probe (the
probe-then-fine-tune recipe full mode follows), batch-norm statistics stay as ImageNet left them,
and a mirrored activation map stands in for a mirrored photo. A few augmented views of each
training photo (random resized crops, colour: what full mode draws afresh every epoch) are kept
beside its centre crop, and each step draws one of them per photo, then crops its activation map
at random. On the grocery photos (Lite0, 8 epochs) the tuned top scored 79.1 Top-1 on the centre
crop alone, 80.0 with the maps cropped, 80.9 with two views and 81.3 with both (81.9 with a crop
side drawn from every size, whose new shapes slowed each epoch); the views cost two more passes of
the lower blocks over the training photos, the crops nothing. The epoch kept is the
one best on validation; the blocks are the model's own modules, so the model comes out tuned in
place.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from core.progress import Bar
from models.efficientnet_lite import EfficientNetLite


class Inputs(Protocol):
    """Kept activations, (n, C, H, W): a tensor, or rows read from a store as they are asked for."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice | torch.Tensor, /) -> torch.Tensor: ...


@dataclass(frozen=True)
class Split:
    """An EfficientNet-Lite cut before its last `top_blocks` blocks."""

    model: EfficientNetLite
    top_blocks: int

    @torch.no_grad()  # not inference mode: the kept activations feed training later
    def lower(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part: the stem and every block below the top."""
        m = self.model.eval()
        x = F.relu6(m._bn0(m._conv_stem(x)))
        for block in list(m._blocks)[: len(m._blocks) - self.top_blocks]:
            x = block(x)
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The top up to the classifier's input: the feature a probe is fitted on."""
        m = self.model
        for block in list(m._blocks)[len(m._blocks) - self.top_blocks :]:
            x = block(x)
        x = F.relu6(m._bn1(m._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def top(self, x: torch.Tensor) -> torch.Tensor:
        """The part that learns, to the classifier's logits."""
        return self.model._fc(self.model._dropout(self.pooled(x)))

    def top_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(the body's, the classifier's) trainable parameters of the top."""
        m = self.model
        body = [p for b in list(m._blocks)[len(m._blocks) - self.top_blocks :] for p in b.parameters()]
        body += [*m._conv_head.parameters(), *m._bn1.parameters()]
        return body, list(m._fc.parameters())

    def train_mode(self) -> None:
        """Dropout on, every batch norm kept at its statistics: a small shop's batches would move them."""
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()


def activations(split: Split, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The lower part's output for every batch (already normalized), in half precision."""
    return torch.cat([split.lower(x).half() for x in batches])


@torch.no_grad()
def top_features(split: Split, acts: Inputs, batch: int = 256) -> torch.Tensor:
    """The tuned model's features (the classifier's input) of the photos whose activations are
    kept: what a whole pass would compute, at the cost of the top alone."""
    split.model.eval()
    return _in_batches(split.pooled, acts, batch, split.model._fc.in_features)


@torch.no_grad()
def top_logits(split: Split, acts: Inputs, batch: int = 256) -> torch.Tensor:
    split.model.eval()
    return _in_batches(split.top, acts, batch, split.model._fc.out_features)


def _in_batches(fn: Callable[[torch.Tensor], torch.Tensor], acts: Inputs, batch: int, width: int) -> torch.Tensor:
    parts = [fn(acts[i : i + batch].float()) for i in range(0, len(acts), batch)]
    return torch.cat(parts) if parts else torch.empty(0, width)


@dataclass
class TopTuneResult:
    best_epoch: int  # 0: the probe itself stayed best
    val_top1: list[float]  # per epoch, the probe's first
    seconds: float


# A training map is cut to one of these shares of its side (1: kept whole), the same for a batch:
# a few sizes, so the convolutions' kernels chosen for each size are reused.
CROP_SIDES = (1.0, 0.85, 0.7)
CROP_SHARE = 0.7  # of the batches
# The body's peak learning rate (the classifier's is `head_lr_scale` times it).
LR = 3e-4


def crop_maps(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random crop of each activation map in `x` (n, C, H, W): the top pools over what is left,
    so it stands in for a closer crop of the photo at no cost."""
    if float(torch.rand((), generator=gen)) >= CROP_SHARE:
        return x
    share = CROP_SIDES[int(torch.randint(len(CROP_SIDES), (), generator=gen))]
    (height, width), (h, w) = x.shape[-2:], (math.ceil(share * x.shape[-2]), math.ceil(share * x.shape[-1]))
    if (h, w) == (height, width):
        return x
    tops = torch.randint(height - h + 1, (len(x),), generator=gen).tolist()
    lefts = torch.randint(width - w + 1, (len(x),), generator=gen).tolist()
    return torch.stack([m[:, t : t + h, left : left + w] for m, t, left in zip(x, tops, lefts, strict=True)])


def draw_views(sources: list[Inputs], index: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rows `index` of the training activations, each from one of `sources` (the centre crop's,
    then each kept view's) drawn at random; only the rows drawn are read."""
    if len(sources) == 1:
        return sources[0][index].float()
    pick = torch.randint(len(sources), (len(index),), generator=gen)
    drawn = torch.cat([rows[index[pick == v]] for v, rows in enumerate(sources) if bool((pick == v).any())])
    x = torch.empty_like(drawn)
    x[torch.argsort(pick, stable=True)] = drawn  # back in the order of `index`
    return x.float()


def epoch_seconds(split: Split, train: tuple[Inputs, torch.Tensor], val: Inputs, batch_size: int = 64) -> float:
    """What one epoch of tune_top is expected to take: a timed training step times the steps, and
    a pass of the top over validation. Takes no step: the model is left as it was."""
    x_train, y_train = train
    if not len(y_train):
        return 0.0
    top_logits(split, val[:batch_size])  # warms up; the second pass is timed
    started = time.monotonic()
    top_logits(split, val[:batch_size])
    val_seconds = (time.monotonic() - started) * math.ceil(len(val) / batch_size)
    split.train_mode()
    for _ in range(2):  # the second step is timed (the first pays for warming up)
        timed = time.monotonic()
        x = x_train[torch.arange(min(batch_size, len(y_train)))].float()
        F.cross_entropy(split.top(x), y_train[: len(x)]).backward()
        split.model.zero_grad(set_to_none=True)
    step = time.monotonic() - timed
    split.model.eval()
    return step * math.ceil(len(y_train) / batch_size) + val_seconds


def tune_top(
    split: Split,
    train: tuple[Inputs, torch.Tensor],
    val: tuple[Inputs, torch.Tensor],
    epochs: int,
    views: tuple[Inputs, ...] = (),
    crop: bool = True,
    lr: float = LR,
    head_lr_scale: float = 10.0,
    weight_decay: float = 1e-4,
    label_smoothing: float = 0.1,
    batch_size: int = 64,
    seed: int = 0,
    deadline: float = math.inf,
    epoch_guess: float | None = None,
) -> TopTuneResult:
    """Trains the top on cached (activations, labels) for up to `epochs`, as many as fit before
    `deadline` (time.monotonic()); keeps the epoch best on validation Top-1. `views` are more
    activations of the training photos, row for row (augmented views of each); `crop` cuts the
    maps at random (crop_maps). `epoch_guess`: what epoch_seconds gave, where the caller has it.

    The epochs that fit are planned before the first, from a timed step and the validation pass,
    so the learning rate's schedule always runs its whole course: a schedule cut off at its peak
    leaves the top worse than the probe it started from."""
    started = time.monotonic()
    (x_train, y_train), (x_val, y_val) = train, val
    body, head = split.top_parameters()
    gen = torch.Generator().manual_seed(seed)

    def val_top1() -> float:
        return float((top_logits(split, x_val).argmax(-1) == y_val).float().mean()) if len(y_val) else 0.0

    def step_loss(index: torch.Tensor) -> torch.Tensor:
        x = draw_views([x_train, *views], index, gen)
        flip = torch.rand(len(index), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)  # the mirrored photo's map, near enough for the top's few layers
        x = crop_maps(x, gen) if crop else x
        return F.cross_entropy(split.top(x), y_train[index], label_smoothing=label_smoothing)

    scores = [val_top1()]
    best = (scores[0], 0, copy.deepcopy(split.model.state_dict()))
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    if not math.isinf(deadline) and len(y_train):
        if epoch_guess is None:
            epoch_guess = epoch_seconds(split, train, x_val, batch_size)
        epochs = min(epochs, int((deadline - time.monotonic()) / epoch_guess))
    if epochs < 1 or not len(y_train):
        split.model.eval()
        return TopTuneResult(0, [round(s, 4) for s in scores], round(time.monotonic() - started, 1))
    opt = torch.optim.AdamW(
        [{"params": body, "lr": lr}, {"params": head, "lr": lr * head_lr_scale}], weight_decay=weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, [lr, lr * head_lr_scale], total_steps=epochs * steps_per_epoch, pct_start=0.1, anneal_strategy="cos"
    )
    last_epoch = 0.0
    with Bar(epochs * len(y_train), f"tuning the top, {epochs} epochs") as bar:
        for epoch in range(1, epochs + 1):
            if time.monotonic() + last_epoch > deadline:
                break
            epoch_started = time.monotonic()
            split.train_mode()
            order = torch.randperm(len(y_train), generator=gen)
            for i in range(0, len(order), batch_size):
                loss = step_loss(order[i : i + batch_size])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(len(order[i : i + batch_size]))
            scores.append(val_top1())
            if scores[-1] > best[0]:
                best = (scores[-1], epoch, copy.deepcopy(split.model.state_dict()))
            last_epoch = time.monotonic() - epoch_started
    split.model.load_state_dict(best[2])
    split.model.eval()
    return TopTuneResult(best[1], [round(s, 4) for s in scores], round(time.monotonic() - started, 1))
