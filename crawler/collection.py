"""An existing collection in: photos a team already has, one folder per product or a CSV of path, product.

Each photo is checked and stored like a crawled one (content-addressed, whole or absent), its
product recorded under the collection's shop, and its provenance kept: the file it came from is
its source, or the CSV's `group` where one is given (photos cut from one picture, or one
customer's set, share a group, and training splits a group whole). A `catalog` column marks the
shop's own photos of a product (yes/no), which count as a crawled product page's: never grouped
with another product's as near-duplicates, and a source of their own. Imported photos count as
accepted by the two rules, since a team sorted them by product already; a photo a person
already decided on keeps that decision. Dedupe runs next, so a photo imported twice, or also
crawled, trains once.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from core import queries as q
from core.errors import ReviewlensError, quoted
from core.files import OverFileBudget, read_bounded
from core.layout import Layout
from core.manifest import CATALOG_REVIEW, open_manifest, utc_now
from core.store import shared_store
from crawler.errors import InvalidImage
from crawler.store import PhotoStore

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
IMPORT_CATEGORY = 0  # imported products belong to no crawled category
BATCH = 500  # photos recorded per transaction
# A phone's largest photo is a few tens of megabytes; the crawler's default cap (max_image_bytes) too.
MAX_PHOTO_BYTES = 50_000_000
# A CSV row names one photo in about a hundred bytes: a million photos, with room to spare.
MAX_CSV_BYTES = 200_000_000


class BadCollection(ReviewlensError):
    """A collection that cannot be read: no such folder, no photos, or a CSV without its columns."""


@dataclass(frozen=True)
class Entry:
    path: Path
    product_id: str
    name: str
    url: str = ""
    group: str = ""  # photos of one source: they split together
    catalog: bool = False  # the shop's own photo of the product, not a customer's


@dataclass
class ImportSummary:
    photos: int = 0  # photos read from the collection
    stored: int = 0  # new to the store
    already_known: int = 0  # the same bytes were stored before (crawled or imported)
    products: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # file -> why it was not imported

    def __str__(self) -> str:
        line = (
            f"imported {self.photos - len(self.refused)} of {self.photos} photos of {self.products} products "
            f"({self.stored} new to the store, {self.already_known} already there)"
        )
        return line + "".join(f"\n  refused {path}: {why}" for path, why in sorted(self.refused.items()))


def read_folders(root: Path) -> list[Entry]:
    """One sub-folder per product; its name is the product's id and name."""
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entries += [
            Entry(photo, folder.name, folder.name)
            for photo in sorted(folder.rglob("*"))
            if photo.suffix.lower() in SUFFIXES and photo.is_file()
        ]
    return entries


def read_csv(file: Path) -> list[Entry]:
    """Rows of path, product (and optionally name, url, group, catalog); a relative path is read from
    the CSV's folder."""
    if (size := file.stat().st_size) > MAX_CSV_BYTES:
        raise BadCollection(f"{file} holds {size:,} bytes: a collection's CSV has at most {MAX_CSV_BYTES:,}")
    with file.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "product"} <= set(rows[0]):
        raise BadCollection(
            f"{file} needs a header with the columns path and product (name, url, group and catalog optional)"
        )
    entries = []
    for line, r in enumerate(rows, start=2):
        if not _web_link(url := (r.get("url") or "").strip()):
            # Shown to shoppers as a link: a javascript: or data: address would run in their browser.
            raise BadCollection(f"{file}, line {line}: url {quoted(url, 60)} is not an http(s) address")
        if r["path"] and r["product"]:
            product = r["product"].strip()
            name, group = (r.get("name") or product).strip(), (r.get("group") or "").strip()
            catalog = _yes_or_no(r.get("catalog"), f"{file}, line {line}")
            entries.append(Entry(file.parent / r["path"], product, name, url, group, catalog))
    return entries


def _yes_or_no(value: str | None, where: str) -> bool:
    word = (value or "").strip().lower()
    if word in ("", "0", "no", "false"):
        return False
    if word in ("1", "yes", "true"):
        return True
    raise BadCollection(f"{where}: catalog {quoted(word, 20)} is neither yes nor no")


def _web_link(url: str) -> bool:
    parts = urlsplit(url)
    return not url or (parts.scheme in ("http", "https") and bool(parts.netloc))


def read_collection(source: Path) -> list[Entry]:
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        entries = read_csv(source)
    elif source.is_dir():
        entries = read_folders(source)
    else:
        raise BadCollection(f"{source} is neither a folder of product folders nor a .csv file")
    if not entries:
        raise BadCollection(f"no photos found in {source} (one sub-folder per product, or a CSV of path, product)")
    return entries


def import_collection(
    source: Path, layout: Layout, shop: str = "import", max_pixels: int = 40_000_000
) -> ImportSummary:
    """Stores the collection's photos and records them as accepted photos of their products."""
    entries = read_collection(source)
    store = PhotoStore(layout.store_dir, max_pixels, shared_store(layout))
    summary = ImportSummary(products=len({e.product_id for e in entries}))
    now = utc_now()
    with open_manifest(layout, create=True) as manifest:
        known = {r["sha256"] for r in manifest.rows(q.ALL_PHOTOS)}
        with manifest.transaction() as db:
            for e in {e.product_id: e for e in entries}.values():
                db.run(q.UPSERT_PRODUCT, shop, e.product_id, IMPORT_CATEGORY, e.name, e.url, 0, now)
        for start in range(0, len(entries), BATCH):
            photos, sources, labels = [], [], []
            for e in entries[start : start + BATCH]:
                summary.photos += 1
                try:
                    photo = store.put(read_bounded(e.path, MAX_PHOTO_BYTES))
                except OverFileBudget as exc:
                    summary.refused[str(e.path)] = f"the file {exc}"
                    continue
                except (OSError, InvalidImage) as exc:
                    summary.refused[str(e.path)] = getattr(exc, "reason", None) or str(exc)
                    continue
                if photo.sha256 in known:
                    summary.already_known += 1
                else:
                    summary.stored += 1
                    known.add(photo.sha256)
                origin = e.path.resolve()
                photos.append((photo.sha256, photo.path, photo.format, photo.width, photo.height, photo.bytes, now))
                # The source's id: the shop's catalog, the group where the CSV names one, else the file.
                review = CATALOG_REVIEW if e.catalog else f"import-group:{e.group}" if e.group else f"import:{origin}"
                sources.append((shop, review, origin.as_uri(), e.product_id, IMPORT_CATEGORY, photo.sha256, None, now))
                labels.append((photo.sha256, now, f"imported from {origin}", now))
            # Stored files first, their rows after: a killed import leaves files the next one records.
            with manifest.transaction() as db:
                db.run_many(q.INSERT_PHOTO, photos)
                db.run_many(q.INSERT_SOURCE, sources)
                db.run_many(q.ACCEPT_IMPORTED, labels)
    return summary
