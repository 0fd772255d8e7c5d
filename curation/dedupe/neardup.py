"""Every pair of 64-bit hashes within a Hamming distance, exactly, without comparing all pairs.

Small sets are compared block by block (vectorized popcount). Large sets go through
multi-index hashing (Norouzi, Punjani and Fleet, 2012): each hash is cut into four 16-bit
substrings, and two hashes within distance d differ in at most d // 4 bits on at least one
substring (pigeonhole), so joining each substring's buckets with those within d // 4 bits finds
every pair, and each candidate's full distance decides. The join is compiled with numba
(curation/dedupe/_mih_kernels.py). Measured in tests/benchmarks/neardup_scale.py.
"""

from __future__ import annotations

import numpy as np

from curation.dedupe.hashing import hamming_matrix

# Below this many hashes, comparing all pairs is as fast as building an index.
INDEX_FROM = 20_000
# Four 16-bit substrings: at 1M hashes a bucket holds about 15 of them, and d = 10 joins each
# with 137 buckets per table. Three tables answer d = 8 a little faster but d = 10 five times
# slower, five tables d = 10 six times slower (tests/benchmarks/neardup_scale.py --tables N).
TABLES = 4
# Each table's keys are cut into this many ranges of parallel work.
PARTS = 8


def _check(max_distance: int) -> None:
    if not 0 <= max_distance <= 64:
        raise ValueError(f"max_distance must be within 0..64, got {max_distance}")


def pairs_brute(
    queries: np.ndarray, database: np.ndarray, max_distance: int, block: int = 2048
) -> set[tuple[int, int]]:
    """(query index, database index) of every pair within `max_distance`, comparing all pairs."""
    _check(max_distance)
    found: set[tuple[int, int]] = set()
    for start in range(0, len(queries), block):
        d = hamming_matrix(queries[start : start + block], database)
        found.update((int(start + i), int(j)) for i, j in zip(*np.nonzero(d <= max_distance), strict=True))
    return found


class _Tables:
    """Hashes ordered by each substring, with where each substring value's run starts."""

    def __init__(self, hashes: np.ndarray, shifts: np.ndarray, masks: np.ndarray, width: int) -> None:
        tables = len(shifts)
        self.hashes = np.empty((tables, len(hashes)), dtype=np.uint64)
        self.ids = np.empty((tables, len(hashes)), dtype=np.int64)
        self.starts = np.zeros((tables, 2**width + 1), dtype=np.int64)
        for t in range(tables):
            keys = ((hashes >> np.uint64(shifts[t])) & masks[t]).astype(np.int64)
            order = np.argsort(keys, kind="stable")
            self.hashes[t], self.ids[t] = hashes[order], order
            np.cumsum(np.bincount(keys, minlength=2**width), out=self.starts[t, 1:])


class MultiIndex:
    """A multi-index hash of `database` answering range queries exactly.

    Each 64-bit hash is cut into `tables` substrings of near-equal width; table t holds the
    database ordered by substring t, with where each substring value's bucket starts, so a
    bucket is one contiguous run of full hashes. Queries are ordered the same way, and each
    run of queries that share a substring is checked against each bucket within the radius
    at once: at a million queries a bucket is read once for about fifteen of them.
    """

    def __init__(self, database: np.ndarray, tables: int = TABLES) -> None:
        if not 3 <= tables <= 64:
            raise ValueError(f"tables must be within 3..64, got {tables}")  # wider keys would not fit in memory
        self._database = np.ascontiguousarray(database, dtype=np.uint64)
        widths = np.full(tables, 64 // tables)
        widths[: 64 % tables] += 1
        self.tables, self.size = tables, len(self._database)
        self._shifts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        self._masks = ((np.uint64(1) << widths.astype(np.uint64)) - np.uint64(1)).astype(np.uint64)
        self._width = int(widths.max())
        self._entries = self._tables(self._database)

    def _tables(self, hashes: np.ndarray) -> _Tables:
        return _Tables(hashes, self._shifts, self._masks, self._width)

    def search(self, queries: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
        """(query indices, database indices) of every pair within `max_distance` bits, as arrays."""
        _check(max_distance)
        from curation.dedupe import _mih_kernels

        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        asked = self._entries if queries is self._database else self._tables(queries)
        # Pigeonhole: two hashes within d differ in at most d // tables bits on some substring.
        radius = min(max_distance // self.tables, self._width)
        flips = _masks_within(self._width, radius)
        capacity = 4 * (len(queries) // PARTS + 1) + 64
        while True:
            rows, ids, counts = _mih_kernels.search(
                asked.hashes, asked.ids, asked.starts, self._entries.hashes, self._entries.ids, self._entries.starts,
                self._shifts, self._masks, flips, radius, max_distance, PARTS, capacity,
            )  # fmt: skip
            if (counts >= 0).all():
                break
            capacity *= 4  # a part had more pairs than room: rare, so ask again for all
        keep = np.arange(capacity) < counts[:, None]
        return rows[keep], ids[keep]

    def self_join(self, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
        """search() with the database as its own queries, reusing its tables."""
        return self.search(self._database, max_distance)

    def query(self, queries: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
        """(query index, database index) of every pair within `max_distance` bits."""
        rows, ids = self.search(queries, max_distance)
        return set(zip(rows.tolist(), ids.tolist(), strict=True))


def _masks_within(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit mask with at most `radius` bits set: the keys to probe around a key."""
    masks = np.arange(2**bits, dtype=np.uint64)
    return masks[np.bitwise_count(masks) <= radius]


def pairs_indexed(queries: np.ndarray, database: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
    """The same answer as pairs_brute, through a multi-index hash of `database`.

    Passing one array as both reuses the database's tables for the queries.
    """
    return MultiIndex(database).query(queries, max_distance)


def pairs_within(queries: np.ndarray, database: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
    """(query index, database index) of every pair within `max_distance` bits."""
    if len(database) >= INDEX_FROM:
        return pairs_indexed(queries, database, max_distance)
    return pairs_brute(queries, database, max_distance)


def near_pairs(full: np.ndarray, centre: np.ndarray | None, max_distance: int, max_cross: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) of photos that are near duplicates.

    Two photos pair when their whole-photo hashes are within `max_distance`, or when one's
    whole-photo hash is within `max_cross` of the other's centre hash (the middle 80% of the
    photo): the second catches a re-post cropped at the border, which moves a pHash far.
    """
    found = {(i, j) for i, j in pairs_within(full, full, max_distance) if i < j}
    if centre is not None:
        for i, j in pairs_within(full, centre, max_cross):
            if i != j:
                found.add((min(i, j), max(i, j)))
    return sorted(found)
