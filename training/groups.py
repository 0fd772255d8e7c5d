"""Which photos must split together, and the split that keeps them so.

Photos that share a source show one room, one light, one hand: a review's photos, the crops a
team cut from one picture (an import's `group` column), a duplicate group. Put on both sides of
the split, they let the test photos be recognized by their background and flatter the report.
So each source, and every source joined to it through a shared photo, is one split group, and
the split assigns whole groups, even where a group holds photos of several products.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from core.manifest import CATALOG_REVIEW

# What a split group is made of, for the report's header.
GROUPED_BY = "source (a review's photos, an import's group column) and duplicate group"


def source_key(shop: str, product_id: str, review_id: str) -> str:
    """The source a photo came from. A shop's catalog photos are no review: each product's are
    one source of their own, not one shared by every product of the shop."""
    if review_id == CATALOG_REVIEW:
        return f"{shop}\x00{product_id}\x00{review_id}"
    return f"{shop}\x00{review_id}"


class _Joined:
    """Union-find over names: every name ends in the group of everything it was joined to."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        root = self.parent.setdefault(name, name)
        while root != self.parent[root]:
            root = self.parent[root]
        while name != root:  # path compression, so deep chains are walked once
            self.parent[name], name = root, self.parent[name]
        return root

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def split_groups(photos: Iterable[str], links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each photo's split group: `links` pairs a photo with a source (or duplicate group) it shares.
    A group is named by the smallest name in it, so the same photos give the same names."""
    joined = _Joined()
    photos = list(photos)
    for photo in photos:
        joined.find(f"photo:{photo}")
    for photo, source in links:
        joined.join(f"photo:{photo}", f"source:{source}")
    return {photo: joined.find(f"photo:{photo}") for photo in photos}


def _rank(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def assign_splits(
    groups_of_product: dict[str, list[str]], val_share: float, test_share: float, seed: int
) -> dict[str, str]:
    """Assigns each split group one split, product by product, in an order a seeded hash shuffles.

    Every product with three or more groups gets at least one group in val and one in test. A
    group another product already placed keeps its split and counts toward this product's shares.
    """
    out: dict[str, str] = {}
    for product in sorted(groups_of_product):
        ordered = sorted(set(groups_of_product[product]), key=lambda g: _rank(seed, g))
        n = len(ordered)
        want = {"test": max(1, round(n * test_share)) if n >= 3 else 0, "val": 0}
        want["val"] = max(1, round(n * val_share)) if n >= 3 else 0
        for g in ordered:
            if g in out and out[g] in want:
                want[out[g]] -= 1
        for g in ordered:
            if g not in out:
                out[g] = "test" if want["test"] > 0 else "val" if want["val"] > 0 else "train"
                if out[g] in want:
                    want[out[g]] -= 1
    return out


def leaks_into_test(
    examples: list[dict[str, str]], hashes: dict[str, tuple[int, int]], max_distance: int, max_cross: int
) -> dict[str, int | None]:
    """How many test photos share a split group with a training photo (0 by construction), and how
    many lie within dedupe's distance of one (`hashes`: each photo's pHash and centre hash; None
    where the photos were never hashed). `examples`: a snapshot's, as snapshot.json keeps them."""
    train = [e for e in examples if e["split"] == "train"]
    test = [e for e in examples if e["split"] == "test"]
    train_groups = {e.get("source") or e["sha256"] for e in train}
    shared = sum((e.get("source") or e["sha256"]) in train_groups for e in test)
    known_test = [hashes[e["sha256"]] for e in test if e["sha256"] in hashes]
    known_train = [hashes[e["sha256"]] for e in train if e["sha256"] in hashes]
    if not known_test or not known_train:
        return {"test": len(test), "sharing_a_group": shared, "near_duplicates": None}
    a, b = np.array(known_test, dtype=np.uint64), np.array(known_train, dtype=np.uint64)
    near = 0
    for start in range(0, len(a), 256):  # 256 x len(train) distances at a time: memory stays small
        full, centre = a[start : start + 256, 0:1], a[start : start + 256, 1:2]
        close = np.bitwise_count(full ^ b[None, :, 0]) <= max_distance
        close |= np.bitwise_count(full ^ b[None, :, 1]) <= max_cross  # a re-post cropped at the border
        close |= np.bitwise_count(centre ^ b[None, :, 0]) <= max_cross
        near += int(close.any(1).sum())
    return {"test": len(test), "sharing_a_group": shared, "near_duplicates": near}
