"""A picture for people: each object's box on the photo, with its best product and score."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from search.finder import FoundObject

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def draw_objects(image: Image.Image, objects: list[FoundObject], out: Path, side: int = 1024) -> Path:
    """Writes `image` (shrunk to `side`) with a numbered box and label per object to `out` as PNG."""
    picture = image.convert("RGB")
    picture.thumbnail((side, side))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(12, picture.width // 45))
    labels: list[tuple[float, float, float, float]] = []
    for n, found in enumerate(objects, start=1):
        colour = COLOURS[(n - 1) % len(COLOURS)]
        left, top, right, bottom = (
            found.box[0] * picture.width,
            found.box[1] * picture.height,
            found.box[2] * picture.width,
            found.box[3] * picture.height,
        )
        draw.rectangle((left, top, right, bottom), outline=colour, width=max(2, picture.width // 300))
        best = found.matches[0]
        text = f"{n}. {best.product.name} {best.score:.2f}" + ("" if found.sure else " (not sure)")
        x, y = left + 3, top + 3
        box = draw.textbbox((x, y), text, font=font)
        while any(_overlap(box, other) for other in labels) and box[3] < picture.height:
            y += box[3] - box[1] + 2  # below a label drawn already, so both stay readable
            box = draw.textbbox((x, y), text, font=font)
        labels.append(box)
        draw.rectangle(box, fill=colour)
        draw.text((x, y), text, fill="white", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, "PNG")
    return out


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
