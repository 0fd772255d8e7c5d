"""Dataset snapshots: accepted photos, their products, a split no source straddles, safe decoding."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from core import queries as q
from core.boxes import area, parse_box, view_key
from core.errors import ReviewlensError, quoted
from core.images import STORED, OverBudget, PixelBudget
from core.layout import Layout
from core.manifest import CATALOG_REVIEW, Manifest, Row, open_manifest
from core.photos import find_damaged
from training.groups import assign_splits, source_key, split_groups

# A person's box makes a view of its photo to train on when it leaves out a real part of the
# frame (a box of nearly all of it is the photo again) and keeps enough pixels to show the product.
BOX_VIEW_MAX_AREA = 0.8
BOX_VIEW_MIN_PIXELS = 64


@dataclass(frozen=True)
class ProductClass:
    product_id: str
    name: str
    url: str


@dataclass(frozen=True)
class Example:
    sha256: str
    path: str  # relative to the store's root
    group_id: str
    label: int
    split: str
    box: str = ""  # a view of the photo cut to a person's box ('left,top,right,bottom'), or the whole photo
    source: str = ""  # its split group (training/groups.py): photos of one source split together
    catalog: bool = False  # the shop's own photo of the product, not a customer's

    @property
    def key(self) -> str:
        """The name its features and cached pixels are kept under."""
        return view_key(self.sha256, self.box)


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    classes: list[ProductClass]
    examples: list[Example]
    # Products with accepted photos, but too few to train on: the index alone finds them.
    searched_only: int = 0

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "snapshot_id": self.snapshot_id,
                    "classes": [asdict(c) for c in self.classes],
                    "examples": [asdict(e) for e in self.examples],
                },
                indent=1,
            )
        )


def box_views(rows: list[Row]) -> dict[str, str]:
    """The box of each boxed photo (BOXED_PHOTOS rows) worth a view of its own, by photo hash."""
    views = {}
    for r in rows:
        try:
            box = parse_box(r["box"])
        except ValueError:
            continue  # a box written by hand into the manifest, not by the pull: not trained on
        short = min((box[2] - box[0]) * r["width"], (box[3] - box[1]) * r["height"])
        if area(box) <= BOX_VIEW_MAX_AREA and short >= BOX_VIEW_MIN_PIXELS:
            views[r["sha256"]] = r["box"]
    return views


def make_snapshot(
    layout: Layout, val_share: float, test_share: float, seed: int, min_photos: int, with_boxes: bool = True
) -> Snapshot:
    """Builds the snapshot of accepted photos and records its split in the manifest.

    A photo trains when it is usable (the manifest's usable_photos: the kept photo of its
    duplicate group, posted under one product only or given one by a person) and accepted by
    the rules, and its file is intact. Products with fewer than `min_photos` such photos are left out.

    `with_boxes`: the labeling stage's boxes train too. A photo a person boxed as one product
    adds its box's view to the training photos: an accepted photo's view when the photo trains,
    and the view of a photo refused only because its product is small in the frame, which shows
    that product alone. Validation and test stay whole photos, as the study measured them.
    """
    with open_manifest(layout) as manifest:
        accepted = manifest.rows(q.ACCEPTED_PHOTOS)
        # A photo whose file went missing or changed trains nothing (it would train under a wrong
        # label, or stop the run): it is left out, and the next crawl fetches it again.
        damaged = find_damaged(manifest, layout, accepted)
        by_product: dict[str, list[Row]] = {}
        for r in accepted:
            if r["sha256"] not in damaged:
                by_product.setdefault(r["product_id"], []).append(r)
        # A product with one photo never enters a classifier head, whatever min_photos says: it has
        # nothing to validate or test on, and the index finds it from that photo alone.
        kept = {pid: rs for pid, rs in by_product.items() if len(rs) >= max(min_photos, 2)}
        classes = [ProductClass(pid, rs[0]["name"], rs[0]["url"]) for pid, rs in sorted(kept.items())]
        label_of = {cls.product_id: label for label, cls in enumerate(classes)}
        rows = [r for cls in classes for r in kept[cls.product_id]]
        boxed = [r for r in manifest.rows(q.BOXED_PHOTOS) if r["product_id"] in label_of] if with_boxes else []
        links = manifest.rows(q.SPLIT_LINKS)
        group_of = split_groups(
            [r["sha256"] for r in rows + boxed],
            [(r["sha256"], source_key(r["shop"], r["product_id"], r["review_id"])) for r in links]
            + [(r["sha256"], f"duplicates:{r['group_id']}") for r in links if r["group_id"]],
        )
        groups_of_product: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            groups_of_product[r["product_id"]].append(group_of[r["sha256"]])
        splits = assign_splits(groups_of_product, val_share, test_share, seed)
        catalog = {r["sha256"] for r in links if r["review_id"] == CATALOG_REVIEW}
        examples = [
            Example(r["sha256"], r["path"], r["group_id"], label_of[r["product_id"]], splits[group_of[r["sha256"]]],
                    source=group_of[r["sha256"]], catalog=r["sha256"] in catalog)
            for r in rows
        ]  # fmt: skip
        # A box's view trains only where its photo's group does: a view of a photo refused for
        # its small product, from a review whose other photo is a test photo, would leak it.
        boxed = [r for r in boxed if splits.get(group_of[r["sha256"]], "train") == "train"]
        examples += _box_examples(manifest, layout, boxed, label_of, group_of)
        digest = hashlib.sha256(json.dumps([(e.key, e.label, e.split) for e in examples]).encode()).hexdigest()[:12]
        snapshot = Snapshot(f"snap-{digest}", classes, examples, len(by_product) - len(kept))
        with manifest.transaction() as db:
            db.run_many(q.RECORD_SPLIT, [(snapshot.snapshot_id, e.key, e.split) for e in examples])
    return snapshot


def _box_examples(
    manifest: Manifest, layout: Layout, boxed: list[Row], labels: dict[str, int], group_of: dict[str, str]
) -> list[Example]:
    """The training views cut to the boxes of `boxed` (BOXED_PHOTOS rows) worth a view."""
    damaged = find_damaged(manifest, layout, boxed)
    views = box_views([r for r in boxed if r["sha256"] not in damaged])
    return [
        Example(r["sha256"], r["path"], r["group_id"], labels[r["product_id"]], "train", views[r["sha256"]],
                group_of[r["sha256"]])
        for r in boxed
        if r["sha256"] in views
    ]  # fmt: skip


class UnreadablePhoto(ReviewlensError):
    """A photo that is missing, not an image, or too large to decode safely."""


def load_image(path: Path) -> Image.Image:
    """Opens a photo upright (EXIF orientation applied) in RGB; raises UnreadablePhoto."""
    return decode_image(path, str(path))


def decode_image(source: Path | IO[bytes], name: str, budget: PixelBudget = STORED) -> Image.Image:
    """A photo's file or bytes decoded as load_image does, within `budget` (core/images.py);
    `name` says which photo in an error."""
    try:
        with Image.open(source) as img:
            # Checked on the header, before any pixel is decoded: a small file may claim a huge image.
            budget.check_header(img.width, img.height, name)
            img.draft("RGB", (512, 512))  # JPEG decodes at reduced size: the models see 160-260 px
            budget.check_decoded(img.width, img.height, name)
            return ImageOps.exif_transpose(img).convert("RGB")
    except OverBudget as exc:
        raise UnreadablePhoto(str(exc)) from exc
    except Image.DecompressionBombError as exc:  # so large that Pillow refuses to open it at all
        raise UnreadablePhoto(f"{name} has too many pixels to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:  # its text names the in-memory file, a heap address
        raise UnreadablePhoto(f"{name} is not a readable image: no image format Pillow knows") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadablePhoto(f"{name} is not a readable image: {quoted(exc, 160)}") from exc
