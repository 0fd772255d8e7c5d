"""Dedupe: validates new photos, hashes them once, and groups near duplicates.

Exact duplicates need no work: the store is content-addressed, so the same bytes posted twice
are one photo with two `sources` rows. Near duplicates (a re-post resized, recompressed or
cropped) are pairs whose 64-bit pHash differ in at most `max_distance` bits, or whose pHash is
within `max_cross_distance` of the other's centre hash (curation/dedupe/neardup.py).

The thresholds come from tests/benchmarks/neardup_quality.py on 500 real grocery-store photos:
at 10 bits (imagededup's default) JPEG quality 40, 50% resizing and +20% brightness are all
found, and 0.003% of pairs of different photos fall within it (imagededup: 0.004%); 8 bits
finds the same on real photos, but the demo shop's re-posts need 10. A 10% border crop moves
pHash past any usable threshold (0.6% found at 12 bits); the centre hash within 6 bits finds 99.8% of
them and adds no false pair. Mirrored re-posts are not found.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import queries as q
from core.layout import Layout
from core.manifest import CATALOG_REVIEW, Manifest, Row, open_manifest
from core.photos import OutsideStore, photo_path
from core.settings import DedupeConfig
from core.store import localise
from curation.dedupe.hashing import PhotoCheck, check_photos
from curation.dedupe.neardup import near_pairs

log = logging.getLogger(__name__)
# (sha256, status, reason, pHash, centre hash): one photo's row of the curation table.
CheckRow = tuple[str, str, str | None, str | None, str | None]
# Checks photos: their files and the smallest side allowed -> one check each, in their order. By
# default this machine's processes (check_photos); a flow may hand in a cluster's (flows/dask.py).
Hasher = Callable[[list[Path], int], Iterable[PhotoCheck]]


@dataclass
class DedupeSummary:
    checked: int = 0
    invalid: int = 0
    photos: int = 0
    groups: int = 0
    duplicates: int = 0
    ambiguous: int = 0

    def __str__(self) -> str:
        return (
            f"{self.checked} new photos checked ({self.invalid} invalid); {self.photos} valid photos "
            f"in {self.groups} groups ({self.duplicates} duplicates, {self.ambiguous} ambiguous across products)"
        )


def group_pairs(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Returns for each of `n` items the index of its group's root (union-find, transitive)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def _check_new_photos(
    manifest: Manifest, layout: Layout, config: DedupeConfig, summary: DedupeSummary, hasher: Hasher | None
) -> None:
    rows: list[tuple[Row, Path]] = []
    refused: list[CheckRow] = []
    for r in manifest.rows(q.UNCHECKED_PHOTOS):
        try:
            rows.append((r, photo_path(layout, r["sha256"], r["path"])))
        except OutsideStore as exc:
            refused.append((r["sha256"], "invalid", str(exc), None, None))
    summary.invalid += len(refused)
    summary.checked = len(rows) + len(refused)
    _save_checks(manifest, refused)
    # Where the store is shared, the photos another machine crawled are fetched before hashing.
    localise(layout, (str(path.relative_to(layout.store_dir)) for _, path in rows))
    paths = [path for _, path in rows]
    checks = hasher(paths, config.min_side) if hasher else check_photos(paths, config.min_side, config.workers)
    batch: list[CheckRow] = []
    for (row, _), check in zip(rows, checks, strict=True):
        hashes = [None if h is None else f"{h:016x}" for h in (check.phash, check.centre_hash)]
        batch.append((row["sha256"], "ok" if check.ok else "invalid", check.reason or None, *hashes))
        summary.invalid += not check.ok
        # Written in batches: a killed run keeps what it hashed, and the next one hashes the rest.
        if len(batch) == 500:
            _save_checks(manifest, batch)
    _save_checks(manifest, batch)


def _save_checks(manifest: Manifest, batch: list[CheckRow]) -> None:
    with manifest.transaction() as db:
        db.run_many(q.INSERT_CHECK, batch)
    batch.clear()


def dedupe(config: DedupeConfig, layout: Layout, hasher: Hasher | None = None) -> DedupeSummary:
    """Checks and hashes photos not seen before, then regroups all valid photos.

    Grouping is recomputed from the stored hashes every run, so the result depends only on
    the photos, not on the order they arrived in. The photo kept for a group is the largest,
    then the earliest stored.
    """
    summary = DedupeSummary()
    with open_manifest(layout) as manifest:
        _check_new_photos(manifest, layout, config, summary, hasher)
        rows = manifest.rows(q.HASHED_PHOTOS)
        full = np.array([int(r["phash"], 16) for r in rows], dtype=np.uint64)
        centre = np.array([int(r["centre_hash"] or r["phash"], 16) for r in rows], dtype=np.uint64)
        pairs = near_pairs(full, centre, config.max_distance, config.max_cross_distance)
        # The shop's own photos of two products are two products, however alike they look (the
        # same chair in two colours on white hashes alike): never one photo posted twice.
        catalog = {r["sha256"] for r in manifest.rows(q.PHOTOS_OF_REVIEW_ID, CATALOG_REVIEW)}
        is_catalog = [r["sha256"] in catalog for r in rows]
        pairs = [(a, b) for a, b in pairs if not (is_catalog[a] and is_catalog[b])]
        roots = group_pairs(len(rows), pairs)
        members: dict[int, list[int]] = {}
        for i, root in enumerate(roots):
            members.setdefault(root, []).append(i)
        products_of = _products_of_photos(manifest)
        updates = []
        for group in members.values():
            kept = min(group, key=lambda i: (-rows[i]["pixels"], rows[i]["stored_at"], rows[i]["sha256"]))
            products = set().union(*(products_of[rows[i]["sha256"]] for i in group))
            ambiguous = int(len(products) > 1)
            summary.ambiguous += ambiguous * len(group)
            for i in group:
                updates.append((rows[kept]["sha256"], int(i == kept), ambiguous, rows[i]["sha256"]))
        with manifest.transaction() as db:
            db.run_many(q.SET_GROUP, updates)
        summary.photos = len(rows)
        summary.groups = len(members)
        summary.duplicates = len(rows) - len(members)
    return summary


def _products_of_photos(manifest: Manifest) -> dict[str, set[str]]:
    """{photo: the products it was posted under}."""
    products: dict[str, set[str]] = defaultdict(set)
    for r in manifest.rows(q.PHOTO_PRODUCTS):
        products[r["sha256"]].add(r["product_id"])
    return products
