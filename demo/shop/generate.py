"""Generates the demo shop's catalog and review photos, with the ground truth of every photo.

The same seed gives the same bytes. A known share of photos break the labeling rules: the
product under half of the frame, a second product in the frame, re-posts of an earlier photo.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from demo.shop.render import RGB, SHAPES, draw_product

# The real shop's category ids (../shared/docs/ohouse.md) with the shapes sold in each.
CATEGORIES: list[tuple[int, str, list[str]]] = [
    (10000000, "furniture", ["chair", "sofa", "table"]),
    (18000000, "fabric", ["duvet", "cushion"]),
    (28000000, "lighting", ["lamp", "pendant"]),
    (11000000, "deco", ["vase", "pot_plant"]),
    (16000000, "kitchen", ["mug"]),
]
PALETTE: list[tuple[str, RGB]] = [
    ("rose", (214, 96, 120)),
    ("navy", (36, 52, 110)),
    ("mustard", (212, 168, 40)),
    ("sage", (128, 160, 120)),
    ("charcoal", (60, 60, 66)),
    ("terracotta", (190, 92, 60)),
    ("ivory", (236, 228, 208)),
    ("teal", (30, 130, 140)),
    ("plum", (110, 50, 100)),
    ("sky", (120, 180, 230)),
    ("olive", (120, 120, 40)),
    ("coral", (240, 128, 100)),
]
PATTERN_ORDER = ["solid", "stripes", "floral", "checks", "dots", "zigzag"]
FRAMES = [(400, 300), (480, 360), (360, 360), (300, 400), (360, 480)]
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 0
    n_categories: int = 4
    products_per_category: int = 5
    photos_per_product: int = 36
    # Shares of photos that break a rule; the rest follow both.
    small_share: float = 0.12
    multi_share: float = 0.10
    repost_share: float = 0.10
    # Photos posted again under another product of the same category (the same photo, recompressed):
    # dedupe flags them and a person chooses the product. Drawn after all else, so the other
    # photos do not change with this number.
    cross_posts: int = 4
    # One review in this many has no photo (the real JSON then carries an empty image_url).
    no_photo_every: int = 12
    # Each product page names the shop's own photo of the product (its Open Graph image), as shop
    # pages do for sharing: the product alone on white. Off by default, so the review photos and
    # the truth the tests count are the same either way.
    catalog_photos: bool = False


@dataclass(frozen=True)
class Product:
    product_id: int
    category_id: int
    category: str
    name: str
    shape: str
    pattern: str
    colours: tuple[RGB, RGB, RGB]
    rank: int


@dataclass(frozen=True)
class PhotoTruth:
    photo_id: str
    product_id: int
    review_id: int
    created_at: str
    kind: str  # 'clean', 'small', 'multi', 'repost', 'cross' (another product's photo) or 'none' (no photo)
    width: int
    height: int
    bbox: tuple[int, int, int, int]  # the product's box: left, top, right, bottom
    coverage: float  # the box's share of the frame
    n_objects: int
    duplicate_of: str | None


def make_catalog(config: GeneratorConfig) -> list[Product]:
    """Returns the products, each a distinct shape, pattern and colour set."""
    products = []
    for c, (category_id, category, shapes) in enumerate(CATEGORIES[: config.n_categories]):
        for k in range(config.products_per_category):
            shape = shapes[k % len(shapes)]
            # Products sharing a shape differ in pattern, as a floral and a striped duvet do.
            pattern = PATTERN_ORDER[(k // len(shapes) + c + k) % len(PATTERN_ORDER)]
            names = [PALETTE[(3 * c + k + i * 5) % len(PALETTE)] for i in range(3)]
            colours = (names[0][1], names[1][1], names[2][1])
            label = shape.replace("_", " ")
            products.append(
                Product(
                    product_id=100000 + 1000 * c + k,
                    category_id=category_id,
                    category=category,
                    name=f"{names[0][0].title()} {pattern} {label}",
                    shape=shape,
                    pattern=pattern,
                    colours=colours,
                    rank=k + 1,
                )
            )
    return products


def _background(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A room: wall and floor, furniture and frames behind the product, uneven light, noise."""
    w, h = size
    wall = tuple(rng.randint(90, 235) for _ in range(3))
    floor = tuple(rng.randint(50, 190) for _ in range(3))
    img = Image.new("RGB", size, wall)
    d = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.35, 0.85))
    d.rectangle([0, horizon, w, h], fill=floor)
    # Clutter: shelves, frames, rugs and windows in random places, so two photos of one product
    # differ as two customers' rooms do.
    for _ in range(rng.randint(3, 9)):
        x0, y0 = rng.randint(-w // 4, w), rng.randint(-h // 4, h)
        x1, y1 = x0 + rng.randint(w // 10, w // 2), y0 + rng.randint(h // 10, h // 2)
        colour = tuple(rng.randint(20, 250) for _ in range(3))
        if rng.random() < 0.5:
            d.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            d.ellipse([x0, y0, x1, y1], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.0)))  # out of focus
    # Light falls off from a window somewhere in the frame.
    light = Image.radial_gradient("L").resize((2 * w, 2 * h))
    cx, cy = rng.randint(0, w), rng.randint(0, h)
    light = light.crop((w - cx, h - cy, 2 * w - cx, 2 * h - cy)).point(lambda v: 255 - int(v * rng.uniform(0.3, 0.7)))
    img = Image.composite(img, Image.new("RGB", size, (0, 0, 0)), light)
    # Sensor noise from the scene's own seed (Image.effect_noise would use the C library's rand).
    grain = np.random.default_rng(rng.getrandbits(32)).normal(128, rng.uniform(20, 60), (h, w))
    noise = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8)).convert("RGB")
    return Image.blend(img, noise, 0.08)


def _place(
    frame: Image.Image, sprite: Image.Image, coverage: float, rng: random.Random, x_range: tuple[float, float]
) -> tuple[int, int, int, int]:
    """Pastes `sprite` scaled so its box covers about `coverage` of the frame; returns the box."""
    w, h = frame.size
    aspect = sprite.width / sprite.height
    bw = (coverage * w * h * aspect) ** 0.5
    bh = bw / aspect
    scale = min(1.0, (x_range[1] - x_range[0]) * w / bw, h / bh)
    bw, bh = max(4, int(bw * scale)), max(4, int(bh * scale))
    sprite = sprite.resize((bw, bh), Image.Resampling.LANCZOS)
    sprite = sprite.rotate(rng.uniform(-5, 5), resample=Image.Resampling.BICUBIC, expand=True)
    lo, hi = int(x_range[0] * w), int(x_range[1] * w) - sprite.width
    x = rng.randint(lo, max(lo, hi))
    y = rng.randint(0, max(0, h - sprite.height))
    layer = Image.new("RGBA", frame.size, (0, 0, 0, 0))
    layer.paste(sprite, (x, y))
    frame.paste(layer, (0, 0), layer)
    box = layer.getchannel("A").point(lambda a: 255 if a > 64 else 0).getbbox()
    assert box is not None
    return box


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _frame_for(aspect: float, rng: random.Random) -> tuple[int, int]:
    # Reviewers frame a wide sofa in landscape and a tall lamp in portrait.
    fitting = [f for f in FRAMES if 0.7 <= (f[0] / f[1]) / aspect <= 1.4]
    return rng.choice(fitting or [min(FRAMES, key=lambda f: abs(f[0] / f[1] - aspect))])


def _lighting(img: Image.Image, rng: random.Random) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    cast = [rng.uniform(0.92, 1.08) for _ in range(3)]
    img = Image.merge(
        "RGB", [b.point(lambda v, m=m: min(255, int(v * m))) for b, m in zip(img.split(), cast, strict=True)]
    )
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))


def _scene(
    product: Product, other: Product, kind: str, rng: random.Random
) -> tuple[Image.Image, tuple[int, int, int, int], int]:
    aspect = SHAPES[product.shape][1]
    frame = _background(_frame_for(aspect if kind != "multi" else 1.6, rng), rng)
    sprite = draw_product(product.shape, product.pattern, list(product.colours), 320)
    if kind == "clean":
        # Rotation and the frame's shape can shrink the box: redraw until the rule clearly holds,
        # so the truth never sits on the 50% line.
        for _ in range(20):
            candidate = frame.copy()
            box = _place(candidate, sprite, rng.uniform(0.6, 0.92), rng, (0.0, 1.0))
            if _area(box) >= 0.55 * frame.width * frame.height:
                break
        frame = candidate
        n_objects = 1
    elif kind == "small":
        box = _place(frame, sprite, rng.uniform(0.05, 0.3), rng, (0.0, 1.0))
        n_objects = 1
    else:  # 'multi': this product and another, side by side
        left = rng.random() < 0.5
        other_sprite = draw_product(other.shape, other.pattern, list(other.colours), 320)
        _place(frame, other_sprite, rng.uniform(0.15, 0.3), rng, (0.5, 1.0) if left else (0.0, 0.5))
        box = _place(frame, sprite, rng.uniform(0.2, 0.35), rng, (0.0, 0.5) if left else (0.5, 1.0))
        n_objects = 2
    return _lighting(frame, rng), box, n_objects


def _repost(
    original: Image.Image, box: tuple[int, int, int, int], rng: random.Random
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """An earlier photo posted again: resized, or cropped at the border, and recompressed."""
    w, h = original.size
    if rng.random() < 0.5:
        s = rng.uniform(0.6, 0.85)
        img = original.resize((int(w * s), int(h * s)), Image.Resampling.BILINEAR)
        return img, (int(box[0] * s), int(box[1] * s), int(box[2] * s), int(box[3] * s))
    cx, cy = int(w * rng.uniform(0.01, 0.03)), int(h * rng.uniform(0.01, 0.03))
    img = original.crop((cx, cy, w - cx, h - cy))
    clipped = (max(0, box[0] - cx), max(0, box[1] - cy), min(w - 2 * cx, box[2] - cx), min(h - 2 * cy, box[3] - cy))
    return img, clipped


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _kinds(config: GeneratorConfig, rng: random.Random) -> list[str]:
    n = config.photos_per_product
    counts = {
        "small": round(n * config.small_share),
        "multi": round(n * config.multi_share),
        "repost": round(n * config.repost_share),
    }
    kinds = [k for k, c in counts.items() for _ in range(c)]
    kinds += ["clean"] * (n - len(kinds))
    # Re-posts need an earlier photo: the first three reviews of a product are never re-posts.
    rng.shuffle(kinds)
    while any(k == "repost" for k in kinds[:3]):
        rng.shuffle(kinds)
    return kinds


def generate(config: GeneratorConfig, out_dir: Path) -> Path:
    """Writes catalog.json, truth.json and photos/ under `out_dir`; returns `out_dir`.

    Skips the work when `out_dir` already holds the output of the same configuration.
    """
    out_dir = Path(out_dir)
    stamp = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:16]
    done = out_dir / "generated.json"
    if done.exists() and json.loads(done.read_text()).get("config_hash") == stamp:
        return out_dir
    photos_dir = out_dir / "photos"
    photos_dir.mkdir(parents=True, exist_ok=True)
    products = make_catalog(config)
    truths: list[PhotoTruth] = []
    for p_index, product in enumerate(products):
        rng = random.Random(f"{config.seed}-{product.product_id}")
        originals: list[tuple[str, Image.Image, tuple[int, int, int, int], int]] = []
        review_no = 0
        for i, kind in enumerate(_kinds(config, rng)):
            review_no += 1
            created = BASE_TIME + timedelta(hours=6 * review_no + p_index)
            if config.no_photo_every and review_no % config.no_photo_every == 0:
                truths.append(_no_photo(product, review_no, created))
                review_no += 1
                created = BASE_TIME + timedelta(hours=6 * review_no + p_index)
            photo_id = f"{product.product_id}-{i:03d}"
            duplicate_of = None
            if kind == "repost":
                duplicate_of, original, box0, n_objects = rng.choice(originals)
                img, box = _repost(original, box0, rng)
                data = _jpeg(img, rng.randint(45, 70))
            else:
                other = products[(p_index + 1 + rng.randrange(len(products) - 1)) % len(products)]
                img, box, n_objects = _scene(product, other, kind, rng)
                originals.append((photo_id, img, box, n_objects))
                data = _jpeg(img, rng.randint(80, 94))
            (photos_dir / f"{photo_id}.jpg").write_bytes(data)
            w, h = img.size
            area = _area(box)
            truths.append(
                PhotoTruth(
                    photo_id=photo_id,
                    product_id=product.product_id,
                    review_id=product.product_id * 1000 + review_no,
                    created_at=created.isoformat(),
                    kind=kind,
                    width=w,
                    height=h,
                    bbox=box,
                    coverage=round(area / (w * h), 4),
                    n_objects=n_objects,
                    duplicate_of=duplicate_of,
                )
            )
    truths += _cross_posts(config, products, truths, photos_dir)
    if config.catalog_photos:
        _catalog_photos(products, out_dir / "catalog")
    (out_dir / "catalog.json").write_text(json.dumps([asdict(p) for p in products], indent=1))
    (out_dir / "truth.json").write_text(json.dumps([asdict(t) for t in truths], indent=1))
    done.write_text(json.dumps({"config_hash": stamp, "config": asdict(config)}))
    return out_dir


def _cross_posts(
    config: GeneratorConfig, products: list[Product], truths: list[PhotoTruth], photos_dir: Path
) -> list[PhotoTruth]:
    """Clean photos of one product posted again, each as the newest review of another product."""
    rng = random.Random(f"{config.seed}-cross")
    clean = [t for t in truths if t.kind == "clean"]
    posts: list[PhotoTruth] = []
    for k in range(min(config.cross_posts, len(clean))):
        original = rng.choice(clean)
        category = next(p.category_id for p in products if p.product_id == original.product_id)
        others = [p for p in products if p.category_id == category and p.product_id != original.product_id]
        if not others:
            continue
        target = rng.choice(others)
        last = max((t for t in truths + posts if t.product_id == target.product_id), key=lambda t: t.review_id)
        photo_id = f"{target.product_id}-x{k:02d}"
        with Image.open(photos_dir / f"{original.photo_id}.jpg") as img:
            (photos_dir / f"{photo_id}.jpg").write_bytes(_jpeg(img.convert("RGB"), rng.randint(70, 85)))
        created = datetime.fromisoformat(last.created_at) + timedelta(hours=1)
        posts.append(
            replace(
                original,
                photo_id=photo_id,
                product_id=target.product_id,
                review_id=last.review_id + 1,
                created_at=created.isoformat(),
                kind="cross",
                duplicate_of=original.photo_id,
            )
        )
    return posts


def _catalog_photos(products: list[Product], out_dir: Path) -> None:
    """The shop's own photo of each product: the product alone, centred on white."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for product in products:
        sprite = draw_product(product.shape, product.pattern, list(product.colours), 320)
        side = max(sprite.size) + 80
        frame = Image.new("RGB", (side, side), (255, 255, 255))
        frame.paste(sprite, ((side - sprite.width) // 2, (side - sprite.height) // 2), sprite)
        (out_dir / f"{product.product_id}.jpg").write_bytes(_jpeg(frame, 92))


def _no_photo(product: Product, review_no: int, created: datetime) -> PhotoTruth:
    return PhotoTruth(
        photo_id="",
        product_id=product.product_id,
        review_id=product.product_id * 1000 + review_no,
        created_at=created.isoformat(),
        kind="none",
        width=0,
        height=0,
        bbox=(0, 0, 0, 0),
        coverage=0.0,
        n_objects=0,
        duplicate_of=None,
    )


def load_truth(out_dir: Path) -> dict[str, PhotoTruth]:
    """Returns the ground truth of every generated photo, by photo id."""
    rows = json.loads((Path(out_dir) / "truth.json").read_text())
    truths = [PhotoTruth(**{**r, "bbox": tuple(r["bbox"])}) for r in rows]
    return {t.photo_id: t for t in truths if t.photo_id}


def load_catalog(out_dir: Path) -> list[Product]:
    """Returns the generated products in rank order within each category."""
    rows = json.loads((Path(out_dir) / "catalog.json").read_text())
    return [Product(**{**r, "colours": tuple(tuple(c) for c in r["colours"])}) for r in rows]
