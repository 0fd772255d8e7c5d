"""Every pair of 64-bit hashes within a Hamming distance, exactly, without comparing all pairs.

Small sets are compared block by block (vectorized popcount). Large sets go through faiss's
multi-index hashing: each hash is cut into three 21-bit substrings, and two hashes within
distance d agree to within d // 3 bits on at least one substring (pigeonhole), so probing
each substring's neighbours within d // 3 bits finds every pair, and faiss checks the full
distance of each candidate. Measured in tests/benchmarks/neardup_scale.py.
"""

from __future__ import annotations

import numpy as np

from curation.hashing import hamming_matrix

# Below this many hashes, comparing all pairs is as fast as building an index.
INDEX_FROM = 20_000
SUBSTRINGS, SUBSTRING_BITS = 3, 21


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


class MultiIndex:
    """A multi-index hash of `database` answering range queries exactly."""

    def __init__(self, database: np.ndarray) -> None:
        import faiss

        self._index = faiss.IndexBinaryMultiHash(64, SUBSTRINGS, SUBSTRING_BITS)
        self._index.add(_codes(database))

    def query(self, queries: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
        """(query index, database index) of every pair within `max_distance` bits."""
        _check(max_distance)
        self._index.nflip = max_distance // SUBSTRINGS
        lims, _, ids = self._index.range_search(_codes(queries), max_distance + 1)  # faiss: under the radius
        rows = np.repeat(np.arange(len(queries)), np.diff(lims).astype(np.int64))
        return set(zip(rows.tolist(), ids.tolist(), strict=True))


def _codes(hashes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hashes, dtype=np.uint64).view(np.uint8).reshape(-1, 8)


def pairs_indexed(queries: np.ndarray, database: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
    """The same answer as pairs_brute, through a multi-index hash of `database`."""
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
