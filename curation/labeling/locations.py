"""Where each product is in its review photos, for the push's pre-annotations, kept in the manifest.

The co-localiser fits a product over all its usable photos at once, a tenth of a second of CPU per
photo: hours on a shop of 47,000. Its answer is kept with a digest of the photos it was fitted
over, so a push that failed midway (a dead Label Studio) or runs again before the product has new
photos reuses it; a photo more or less, or another localiser, fits the product again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence

from core import queries as q
from core.layout import Layout
from core.manifest import Manifest
from core.photos import photo_path
from core.progress import Bar
from curation.preannotate.colocalise import LOCALISER_VERSION, CoLocaliser, Location
from curation.preannotate.plain_background import prefer_plain

log = logging.getLogger(__name__)


def photos_digest(hashes: Iterable[str]) -> str:
    """One product's photo set, in one string: the same photos give the same digest in any order."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


def _kept(manifest: Manifest, shop: str, product_id: str, hashes: Sequence[str]) -> list[Location] | None:
    row = manifest.row(q.PRODUCT_LOCATIONS, shop, product_id)
    if row is None or row["localiser"] != LOCALISER_VERSION or row["photos_digest"] != photos_digest(hashes):
        return None
    saved = json.loads(row["locations"])
    return [Location(tuple(saved[h][:4]), int(saved[h][4]), float(saved[h][5])) for h in hashes]


def _keep(manifest: Manifest, shop: str, product_id: str, hashes: Sequence[str], found: Sequence[Location]) -> None:
    saved = {h: [*where.box, where.n_objects, where.split] for h, where in zip(hashes, found, strict=True)}
    manifest.write(
        q.SAVE_PRODUCT_LOCATIONS, shop, product_id, photos_digest(hashes), LOCALISER_VERSION, json.dumps(saved)
    )


def co_located(
    manifest: Manifest, layout: Layout, localiser: CoLocaliser, shop: str, product_id: str, unusable: set[str]
) -> dict[str, Location]:
    """Each usable photo of one product, located: from its plain backdrop where it has one, else by
    the co-localiser over all the product's photos (kept, or fitted now and kept)."""
    photos = [p for p in manifest.rows(q.PRODUCT_PHOTOS, shop, product_id) if p["sha256"] not in unusable]
    hashes = [p["sha256"] for p in photos]
    paths = [photo_path(layout, p["sha256"], p["path"]) for p in photos]
    found = _kept(manifest, shop, product_id, hashes)
    if found is None:
        found = localiser.locate(paths)
        if found is None:
            log.info("%s %s: %d photos are too few to co-localise; the detector alone guesses where the "
                     "backdrop is not plain", shop, product_id, len(photos))  # fmt: skip
        else:
            _keep(manifest, shop, product_id, hashes, found)
    return {h: where for h, where in zip(hashes, prefer_plain(paths, found), strict=True) if where}


def locate_products(
    manifest: Manifest, layout: Layout, localiser: CoLocaliser, products: Iterable[tuple[str, str]], unusable: set[str]
) -> dict[str, Location]:
    """The located photos of every (shop, product id) in `products`."""
    located: dict[str, Location] = {}
    listed = sorted(set(products))
    with Bar(len(listed), "locating each product in its photos", unit="product") as bar:
        for shop, product_id in listed:
            located.update(co_located(manifest, layout, localiser, shop, product_id, unusable))
            bar.update(1)
    return located
