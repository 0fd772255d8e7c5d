"""The confusion matrix as a PNG: rows the true product, columns the guess, darker where more photos went."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

MAX_SIDE = 1200  # pixels of the matrix itself; the labels take a margin beside it
LABEL_CHARS = 28


def write_confusion_png(matrix: torch.Tensor, names: list[str], path: Path) -> Path:
    """Each row normalized to its photos, so a product with few test photos reads as clearly as one with many."""
    n = len(names)
    cell = max(2, min(40, MAX_SIDE // max(n, 1)))
    show_names = cell >= 8  # a label fits beside a row only when rows are tall enough
    margin = 7 * LABEL_CHARS if show_names else 8
    side = n * cell
    img = Image.new("RGB", (margin + side + 8, margin + side + 8), "white")
    draw = ImageDraw.Draw(img)
    rows = matrix.float() / matrix.sum(1, keepdim=True).clamp(min=1)
    for i in range(n):
        for j in range(n):
            value = float(rows[i, j])
            if value > 0:
                shade = round(255 * (1 - value))
                # The diagonal (right answers) in blue, mistakes in red: both darker as they grow.
                colour = (shade, shade, 255) if i == j else (255, shade, shade)
                x, y = margin + j * cell, margin + i * cell
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour)
    draw.rectangle((margin - 1, margin - 1, margin + side, margin + side), outline="grey")
    if show_names:
        for i, name in enumerate(names):
            draw.text((4, margin + i * cell + cell // 2 - 5), name[:LABEL_CHARS], fill="black")
        draw.text((margin, 4), "guessed product ->  (rows: true product)", fill="black")
    img.save(path)
    return path
