"""The confusion matrix as a PNG that reads alone: rows the true product, columns the guess, each
row in shares of that product's test photos, both axes named and numbered, and a colour scale.

Products are numbered in both directions (the row's number names its column too), so the columns
need no names of their own; a cell large enough shows its share in figures.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

MAX_SIDE = 1200  # pixels of the matrix itself; the labels take a margin beside it
LABEL_CHARS = 28
FONT_SIZE = 13
LEGEND_HEIGHT = 250
RIGHT, WRONG = (30, 90, 200), (210, 40, 40)  # the diagonal (right answers) and the mistakes, at 100%


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:  # Pillow's own scalable font, where FreeType is built in
        return ImageFont.load_default(size=size)
    except (AttributeError, OSError, TypeError):
        return ImageFont.load_default()


def shade(colour: tuple[int, int, int], value: float) -> tuple[int, int, int]:
    """White at 0, `colour` at 1."""
    r, g, b = (round(255 + (c - 255) * value) for c in colour)
    return r, g, b


def write_confusion_png(matrix: torch.Tensor, names: list[str], path: Path) -> Path:
    """Each row normalized to its photos, so a product with few test photos reads as clearly as one with many."""
    n = len(names)
    font, small = _font(FONT_SIZE), _font(FONT_SIZE - 2)
    cell = max(2, min(40, MAX_SIDE // max(n, 1)))
    every = 1 if cell >= 18 else 5 if cell >= 4 else 10  # which products are numbered on the axes
    label_w = 8 * (LABEL_CHARS + 5) if cell >= 12 else 40  # a row's name fits only when rows are tall enough
    top, left = 56, 28 + label_w  # title and the guesses' numbers; the axis name and the rows' labels
    legend_w = 150
    side = n * cell
    total, right = int(matrix.sum()), int(matrix.diag().sum())
    title = (
        f"Confusion on {total} test photos ({right / max(total, 1):.1%} right): each row is one true product's "
        "photos, in shares of them"
    )
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # Wide enough for the title, tall enough for the colour scale beside a small matrix.
    width = max(left + side + legend_w, round(measure.textlength(title, font=font)) + 16)
    below = top + max(side, LEGEND_HEIGHT) + 10  # the caption, under the matrix and the scale
    height = below + 28
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), title, fill="black", font=font)
    draw.text((left, 26), "guessed product, numbered as the rows", fill="black", font=font)
    rows = matrix.float() / matrix.sum(1, keepdim=True).clamp(min=1)
    for i in range(n):
        for j in range(n):
            value = float(rows[i, j])
            x, y = left + j * cell, top + i * cell
            if value > 0:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=shade(RIGHT if i == j else WRONG, value))
                if cell >= 26:  # the share in figures, white on a dark cell
                    draw.text((x + cell / 2, y + cell / 2), f"{value * 100:.0f}", anchor="mm", font=small,
                              fill="white" if value > 0.5 else "black")  # fmt: skip
    draw.rectangle((left - 1, top - 1, left + side, top + side), outline="grey")
    for k in range(0, n, every):
        number = str(k + 1)
        draw.text((left + k * cell + cell / 2, top - 4), number, anchor="mb", font=small, fill="black")
        label = f"{number}. {names[k][:LABEL_CHARS]}" if cell >= 12 else number
        draw.text((left - 4, top + k * cell + cell / 2), label, anchor="rm", font=small, fill="black")
    # The rows' axis name, written upwards along the left edge.
    axis = Image.new("RGB", (side, 20), "white")
    ImageDraw.Draw(axis).text((side / 2, 10), "true product", anchor="mm", font=font, fill="black")
    img.paste(axis.rotate(90, expand=True), (4, top))
    _legend(draw, left + side + 24, top, small)
    draw.text(
        (left, below),
        "Blue: right answers; red: photos of the row's product taken for the column's.",
        fill="black",
        font=small,
    )
    img.save(path)
    return path


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int, small: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:
    """The colour scale: the share of a row's photos, for right answers and for mistakes."""
    draw.text((x, y), "share of the", font=small, fill="black")
    draw.text((x, y + 14), "row's photos", font=small, fill="black")
    bar_top, bar_h = y + 40, 200
    for column, colour in ((0, RIGHT), (1, WRONG)):
        bx = x + column * 26
        for step in range(bar_h):
            value = 1 - step / (bar_h - 1)
            draw.line((bx, bar_top + step, bx + 18, bar_top + step), fill=shade(colour, value))
        draw.rectangle((bx, bar_top, bx + 18, bar_top + bar_h), outline="grey")
    for value in (1.0, 0.5, 0.0):
        ty = bar_top + round((1 - value) * bar_h)
        draw.text((x + 56, ty), f"{value:.0%}", anchor="lm", font=small, fill="black")
    draw.text((x, bar_top + bar_h + 8), "right", font=small, fill=RIGHT)
    draw.text((x + 30, bar_top + bar_h + 8), "wrong", font=small, fill=WRONG)
