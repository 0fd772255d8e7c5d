"""Draws a product's design: its silhouette filled with its pattern, as an RGBA sprite."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]


# --- silhouettes: each draws the product's outline in white on a mask of size (w, h) ---


def _chair(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.rectangle([0.15 * w, 0.0, 0.85 * w, 0.55 * h], fill=255)  # back
    d.rectangle([0.1 * w, 0.5 * h, 0.9 * w, 0.65 * h], fill=255)  # seat
    for x in (0.12, 0.78):
        d.rectangle([x * w, 0.6 * h, (x + 0.1) * w, h], fill=255)  # legs


def _sofa(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.rounded_rectangle([0.08 * w, 0.0, 0.92 * w, 0.6 * h], radius=int(0.08 * w), fill=255)
    d.rounded_rectangle([0.0, 0.3 * h, 0.2 * w, 0.9 * h], radius=int(0.05 * w), fill=255)
    d.rounded_rectangle([0.8 * w, 0.3 * h, w, 0.9 * h], radius=int(0.05 * w), fill=255)
    d.rectangle([0.1 * w, 0.5 * h, 0.9 * w, 0.88 * h], fill=255)
    for x in (0.05, 0.9):
        d.rectangle([x * w, 0.88 * h, (x + 0.05) * w, h], fill=255)


def _table(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.rectangle([0.0, 0.0, w, 0.18 * h], fill=255)
    for x in (0.05, 0.85):
        d.rectangle([x * w, 0.15 * h, (x + 0.1) * w, h], fill=255)


def _duvet(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.rounded_rectangle([0, 0, w, h], radius=int(0.06 * min(w, h)), fill=255)


def _cushion(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    # A square with pinched corners, as a stuffed cushion looks.
    pts = []
    for i in range(64):
        t = 2 * math.pi * i / 64
        r = 1.0 - 0.12 * abs(math.sin(2 * t))
        pts.append((w / 2 + r * (w / 2) * _sq(math.cos(t)), h / 2 + r * (h / 2) * _sq(math.sin(t))))
    d.polygon(pts, fill=255)


def _sq(v: float) -> float:
    # Superellipse exponent: between a circle and a square.
    return math.copysign(abs(v) ** 0.4, v)


def _lamp(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.polygon([(0.2 * w, 0.0), (0.8 * w, 0.0), (w, 0.4 * h), (0.0, 0.4 * h)], fill=255)  # shade
    d.rectangle([0.45 * w, 0.4 * h, 0.55 * w, 0.92 * h], fill=255)  # stem
    d.ellipse([0.2 * w, 0.88 * h, 0.8 * w, h], fill=255)  # base


def _pendant(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.rectangle([0.48 * w, 0.0, 0.52 * w, 0.35 * h], fill=255)  # cord
    d.pieslice([0.0, 0.3 * h, w, 1.7 * h], start=180, end=360, fill=255)  # dome


def _vase(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.rectangle([0.35 * w, 0.0, 0.65 * w, 0.3 * h], fill=255)  # neck
    d.ellipse([0.0, 0.2 * h, w, h], fill=255)  # body


def _pot_plant(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.polygon([(0.2 * w, 0.55 * h), (0.8 * w, 0.55 * h), (0.7 * w, h), (0.3 * w, h)], fill=255)
    for cx, cy, r in ((0.5, 0.28, 0.28), (0.25, 0.35, 0.2), (0.75, 0.35, 0.2)):
        d.ellipse([(cx - r) * w, (cy - r) * h, (cx + r) * w, (cy + r) * h], fill=255)


def _mug(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
    d.rounded_rectangle([0.0, 0.0, 0.75 * w, h], radius=int(0.08 * w), fill=255)
    d.ellipse([0.6 * w, 0.25 * h, w, 0.75 * h], fill=255)
    d.ellipse([0.72 * w, 0.37 * h, 0.88 * w, 0.63 * h], fill=0)  # the handle's hole


SHAPES: dict[str, tuple[Callable[[ImageDraw.ImageDraw, int, int], None], float]] = {
    # name: (drawing function, width / height of the product)
    "chair": (_chair, 0.75),
    "sofa": (_sofa, 1.8),
    "table": (_table, 1.5),
    "duvet": (_duvet, 1.3),
    "cushion": (_cushion, 1.0),
    "lamp": (_lamp, 0.55),
    "pendant": (_pendant, 1.2),
    "vase": (_vase, 0.7),
    "pot_plant": (_pot_plant, 0.8),
    "mug": (_mug, 1.1),
}


# --- patterns: each fills an RGB image of size (w, h) with the product's colours ---


def _solid(img: Image.Image, colours: list[RGB], rng: random.Random) -> None:
    ImageDraw.Draw(img).rectangle([0, 0, *img.size], fill=colours[0])


def _stripes(img: Image.Image, colours: list[RGB], rng: random.Random) -> None:
    w, h = img.size
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, w, h], fill=colours[0])
    step = max(6, w // 8)
    for i, x in enumerate(range(-h, w + h, step)):
        if i % 2:
            d.polygon([(x, 0), (x + step, 0), (x + step + h, h), (x + h, h)], fill=colours[1])


def _checks(img: Image.Image, colours: list[RGB], rng: random.Random) -> None:
    w, h = img.size
    d = ImageDraw.Draw(img)
    step = max(6, w // 6)
    for y in range(0, h, step):
        for x in range(0, w, step):
            d.rectangle([x, y, x + step, y + step], fill=colours[((x + y) // step) % 2])


def _dots(img: Image.Image, colours: list[RGB], rng: random.Random) -> None:
    w, h = img.size
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, w, h], fill=colours[0])
    step = max(8, w // 7)
    r = step // 4
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            d.ellipse([x - r, y - r, x + r, y + r], fill=colours[1])


def _floral(img: Image.Image, colours: list[RGB], rng: random.Random) -> None:
    w, h = img.size
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, w, h], fill=colours[0])
    step = max(12, w // 5)
    petal = step // 5
    for y in range(step // 2, h + step, step):
        for x in range(step // 2, w + step, step):
            for k in range(5):
                t = 2 * math.pi * k / 5
                px, py = x + 1.6 * petal * math.cos(t), y + 1.6 * petal * math.sin(t)
                d.ellipse([px - petal, py - petal, px + petal, py + petal], fill=colours[1])
            d.ellipse([x - petal, y - petal, x + petal, y + petal], fill=colours[2])


def _zigzag(img: Image.Image, colours: list[RGB], rng: random.Random) -> None:
    w, h = img.size
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, w, h], fill=colours[0])
    step = max(8, w // 8)
    for y in range(0, h, step * 2):
        pts = [(x, y + (step if (x // step) % 2 else 0)) for x in range(0, w + step, step)]
        d.line(pts, fill=colours[1], width=max(3, step // 3))


PATTERNS: dict[str, Callable[[Image.Image, list[RGB], random.Random], None]] = {
    "solid": _solid,
    "stripes": _stripes,
    "checks": _checks,
    "dots": _dots,
    "floral": _floral,
    "zigzag": _zigzag,
}


def draw_product(shape: str, pattern: str, colours: list[RGB], height: int) -> Image.Image:
    """Returns the product as an RGBA sprite `height` pixels tall, transparent around it."""
    draw_shape, aspect = SHAPES[shape]
    w, h = max(8, int(height * aspect)), max(8, height)
    mask = Image.new("L", (w, h), 0)
    draw_shape(ImageDraw.Draw(mask), w, h)
    fill = Image.new("RGB", (w, h))
    PATTERNS[pattern](fill, colours, random.Random(0))
    # A soft shadow from the top-left light gives the flat drawing some volume.
    shade = Image.linear_gradient("L").resize((w, h)).point(lambda v: 255 - v // 4)
    fill = Image.composite(fill, Image.new("RGB", (w, h), (0, 0, 0)), shade)
    sprite = fill.convert("RGBA")
    sprite.putalpha(mask.filter(ImageFilter.GaussianBlur(0.6)))
    return sprite
