"""Scores that mean what they say, fitted on validation photos only.

Each member's logits are divided by a temperature (its own scores, as reported), the members'
calibrated probabilities are mixed with weights (soft voting), the mixture is sharpened or
softened by one temperature of its own, and "not sure" is the score under which validation
answers were right less often than asked. All by minimizing
validation log-loss over small grids: a handful of numbers, each found the same way every time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import torch

TEMPERATURES = torch.exp(torch.linspace(math.log(0.05), math.log(20.0), 121))
WEIGHT_STEP = 0.1  # the simplex grid ensemble weights are chosen from
MAX_GRID_MEMBERS = 4  # beyond, the grid grows too large and members are weighted equally
# A shop's validation photos are few: weights that fit them barely better than equal ones mostly
# fit their noise, so they must lower the validation log-loss by this share to be used.
WEIGHT_MIN_GAIN = 0.02


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return 0.0
    return float(-probs[torch.arange(len(labels)), labels].clamp(min=1e-12).log().mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T minimizing validation log-loss of softmax(logits / T); 1 when there is nothing to fit on."""
    if len(labels) == 0:
        return 1.0
    losses = [nll((logits / t).softmax(-1), labels) for t in TEMPERATURES]
    return round(float(TEMPERATURES[int(torch.tensor(losses).argmin())]), 4)


def _simplex(n: int) -> list[tuple[float, ...]]:
    steps = round(1 / WEIGHT_STEP)
    combos = itertools.product(range(steps + 1), repeat=n)
    return [tuple(c / steps for c in combo) for combo in combos if sum(combo) == steps]


def fit_weights(member_probs: list[torch.Tensor], labels: torch.Tensor) -> list[float]:
    """Mixing weights minimizing validation log-loss; equal weights win ties, and beyond four members."""
    n = len(member_probs)
    equal = tuple([1 / n] * n)
    if n == 1 or n > MAX_GRID_MEMBERS or len(labels) == 0:
        return list(equal)
    stacked = torch.stack(member_probs)

    def loss(w: tuple[float, ...]) -> float:
        return nll(torch.einsum("m,mnc->nc", torch.tensor(w), stacked), labels)

    best = min(_simplex(n), key=loss)
    return [round(w, 3) for w in (best if loss(best) < loss(equal) * (1 - WEIGHT_MIN_GAIN) else equal)]


def mix(member_probs: list[torch.Tensor], weights: list[float], temperature: float) -> torch.Tensor:
    """The ensemble's probabilities: the weighted mean of its members', then tempered."""
    mixed = torch.einsum("m,mnc->nc", torch.tensor(weights), torch.stack(member_probs))
    return (mixed.clamp(min=1e-12).log() / temperature).softmax(-1)


# No answer is sure below even odds: there the model itself finds it likelier wrong than right.
SURE_FLOOR = 0.5


def sure_threshold(probs: torch.Tensor, labels: torch.Tensor, precision: float) -> float:
    """The lowest top score at which validation answers at or above it were right `precision` of
    the time, and never below SURE_FLOOR; 1.0 (never sure) when no such score exists.

    When every validation answer meets it, the threshold is the weakest of their scores: below
    it validation has shown nothing, and a photo unlike any it saw (a chart, a bare wall) would
    otherwise always be sure.
    """
    if len(labels) == 0:
        return 1.0
    top, guess = probs.max(-1)
    order = top.argsort(descending=True)
    right = (guess[order] == labels[order]).float().cumsum(0)
    share = right / torch.arange(1, len(order) + 1)
    meets = (share >= precision).nonzero()
    if len(meets) == 0:
        return 1.0
    return round(max(float(top[order][int(meets.max())]), SURE_FLOOR), 4)


@dataclass(frozen=True)
class Calibration:
    temperatures: dict[str, float]
    flip: dict[str, bool]  # whether a member answers on the photo and its mirror image averaged
    weights: dict[str, float]
    temperature: float
    sure_threshold: float
    # Whether the vote mixes each member's calibrated probabilities (tempered) or its raw ones, as
    # models made before members' heads were regularized apart did: they keep answering so.
    tempered_vote: bool = False

    def __str__(self) -> str:
        """In words, for a log a person reads."""
        votes = [
            f"{name} {weight:.0%}" + (" (the photo and its mirror image)" if self.flip.get(name) else "")
            for name, weight in self.weights.items()
        ]
        silent = [name for name, weight in self.weights.items() if weight == 0]
        return (
            f"the vote weighs {', '.join(votes)}"
            + (f" ({', '.join(silent)} adds nothing on validation, so it has no say)" if silent else "")
            + f"; the ensemble's temperature {self.temperature:.2f}; not sure below {self.sure_threshold:.2f}"
        )


def member_probs(logits: torch.Tensor, temperature: float, flip: bool) -> torch.Tensor:
    """(N, views, C) logits (the photo, and its mirror where looked at) -> (N, C) probabilities."""
    views = logits if flip else logits[:, :1]
    return (views / temperature).softmax(-1).mean(1)


def calibrate(val_logits: dict[str, torch.Tensor], labels: torch.Tensor, precision: float) -> Calibration:
    """Fits every number above on validation logits (N, views, C) of each member."""
    temps, flips, probs = {}, {}, {}
    for name, logits in val_logits.items():
        plain = fit_temperature(logits[:, 0], labels)
        flipped = fit_temperature(logits.mean(1), labels)
        # The mirror image is worth a second look only where it lowers the validation loss.
        use_flip = logits.shape[1] > 1 and (
            nll(member_probs(logits, flipped, True), labels) < nll(member_probs(logits, plain, False), labels)
        )
        temps[name], flips[name] = (flipped if use_flip else plain), use_flip
        # Soft voting mixes each member's calibrated probabilities. Each member's head has its own
        # L2 strength and balancing, so their raw scores differ in sharpness far more than in
        # worth, and a vote of raw scores goes to the sharpest: on the grocery photos the best
        # member (Lite2, its head the most regularized) got weight 0, and the ensemble fell 3
        # points below it (tests/benchmarks/grocery_accuracy.py).
        probs[name] = member_probs(logits, temps[name], use_flip)
    weights = fit_weights(list(probs.values()), labels)
    mixed = torch.einsum("m,mnc->nc", torch.tensor(weights), torch.stack(list(probs.values())))
    temperature = fit_temperature(mixed.clamp(min=1e-12).log(), labels)
    calibration = Calibration(temps, flips, dict(zip(val_logits, weights, strict=True)), temperature, 1.0, True)
    final = ensemble_probs(val_logits, calibration)
    return replace(calibration, sure_threshold=sure_threshold(final, labels, precision))


def ensemble_probs(logits: dict[str, torch.Tensor], c: Calibration) -> torch.Tensor:
    """The ensemble's calibrated probabilities: its members' probabilities (soft voting), weighted, tempered."""
    own = [
        member_probs(lg, c.temperatures[name] if c.tempered_vote else 1.0, c.flip[name]) for name, lg in logits.items()
    ]
    return mix(own, [c.weights[name] for name in logits], c.temperature)
