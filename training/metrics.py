"""The figures a report gives: Top-k, macro-F1, calibration error, per-product accuracy, confusion."""

from __future__ import annotations

import itertools

import torch


def topk(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of rows whose label is among the `k` highest probabilities, in percent."""
    if len(labels) == 0:
        return 0.0
    k = min(k, probs.shape[1])
    hits = (probs.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return round(100 * float(hits.float().mean()), 1)


def confusion(predicted: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(true, predicted) counts; a label of -1 (a product the model does not know) is left out."""
    known = labels >= 0
    flat = labels[known] * n_classes + predicted[known]
    return torch.bincount(flat, minlength=n_classes * n_classes).view(n_classes, n_classes)


def macro_f1(predicted: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """F1 averaged over the products present in the test photos, in percent: each counts the same."""
    m = confusion(predicted, labels, n_classes).float()
    tp, support, guessed = m.diag(), m.sum(1), m.sum(0)
    f1 = 2 * tp / (support + guessed).clamp(min=1)
    present = support > 0
    return round(100 * float(f1[present].mean()), 1) if present.any() else 0.0


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """How far the top score is from the share right, averaged over score bins, in percent points."""
    if len(labels) == 0:
        return 0.0
    top, guess = probs.max(-1)
    right = (guess == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (top > low) & (top <= high)
        if inside.any():
            error += float(inside.float().mean()) * abs(float(top[inside].mean()) - float(right[inside].mean()))
    return round(100 * error, 1)


def scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1, Top-3, macro-F1 and calibration error of one model's probabilities."""
    return {
        "top1": topk(probs, labels, 1),
        "top3": topk(probs, labels, 3),
        "macro_f1": macro_f1(probs.argmax(-1), labels, probs.shape[1]),
        "ece": expected_calibration_error(probs, labels),
    }
