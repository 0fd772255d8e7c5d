"""A product's box in a photo: left, top, right, bottom as fractions of the frame.

The manifest keeps a box as text ('0.1000,0.2000,0.6000,0.9000'); a view of a photo cut to a box
is named by the photo's hash and that text, so its features and its cached pixels are kept apart
from the whole photo's.
"""

from __future__ import annotations

from PIL import Image

Box = tuple[float, float, float, float]
WHOLE: Box = (0.0, 0.0, 1.0, 1.0)
VIEW_MARK = "#"  # between a photo's hash and the box of a view of it
MARGIN = 0.04  # context around a box: a tight crop loses the product's edges


def box_text(box: Box) -> str:
    return ",".join(f"{min(1.0, max(0.0, v)):.4f}" for v in box)


def parse_box(text: str) -> Box:
    """The box kept as `text`; raises ValueError on anything but four ordered fractions."""
    values = [float(v) for v in text.split(",")]
    if len(values) != 4 or not all(0 <= v <= 1 for v in values) or values[0] >= values[2] or values[1] >= values[3]:
        raise ValueError(f"not a box: {text!r}")
    return values[0], values[1], values[2], values[3]


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def view_key(sha256: str, box: str) -> str:
    """The name of a photo's view: its hash alone for the whole photo, with the box for a cut."""
    return f"{sha256}{VIEW_MARK}{box}" if box else sha256


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The box with a margin of context, cut from the photo."""
    left, top, right, bottom = box
    mx, my = (right - left) * MARGIN, (bottom - top) * MARGIN
    pixels = (
        max(0, round((left - mx) * image.width)),
        max(0, round((top - my) * image.height)),
        min(image.width, max(1, round((right + mx) * image.width))),
        min(image.height, max(1, round((bottom + my) * image.height))),
    )
    return image.crop(pixels)
