"""The compiled inner loop of curation/dedupe/neardup.py's multi-index hash (numba).

Kept apart so that the module that explains the index stays readable and this one holds only
what must run at machine speed: joining a table's query buckets with the database buckets
within the substring radius, and checking each candidate's full distance.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _ctpop(typingctx, x):  # type: ignore[no-untyped-def]
    """LLVM's ctpop on a uint64: one POPCNT instruction on CPUs that have it."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


_popcount = cast(Any, _ctpop)  # called from compiled code only, with the one argument it takes


@njit(cache=True, nogil=True)
def _join_keys(
    first_key: int,
    last_key: int,
    table: int,
    query_hashes: np.ndarray,  # (tables, queries): the queries' hashes, ordered by each table's key
    query_ids: np.ndarray,
    query_starts: np.ndarray,  # (tables, 2**width + 1): where each key's run of queries starts
    hashes: np.ndarray,  # the same three for the database
    ids: np.ndarray,
    starts: np.ndarray,
    shifts: np.ndarray,  # where each table's substring starts
    masks: np.ndarray,  # each table's substring mask, after the shift
    flips: np.ndarray,  # every key mask within the substring radius
    radius: int,
    max_distance: int,
    out_rows: np.ndarray,
    out_ids: np.ndarray,
) -> int:
    """Writes the pairs that `table` finds for the queries with keys first_key..last_key - 1.

    Returns how many, or -1 when they do not fit in out_*. All the queries that share a key
    are checked against one database bucket together, so each bucket is read once for all
    of them rather than once per query.
    """
    mask = masks[table]
    queries, query_id, query_start = query_hashes[table], query_ids[table], query_starts[table]
    entries, entry_id, start = hashes[table], ids[table], starts[table]
    found = 0
    for key in range(first_key, last_key):
        q_lo, q_hi = query_start[key], query_start[key + 1]
        if q_lo == q_hi:
            continue
        for f in range(flips.shape[0]):
            if flips[f] & ~mask:
                continue  # a flip outside this table's (shorter) substring
            bucket = np.int64(np.uint64(key) ^ flips[f])
            lo, hi = start[bucket], start[bucket + 1]
            for q in range(q_lo, q_hi):
                query = queries[q]
                for e in range(lo, hi):
                    diff = query ^ entries[e]
                    if _popcount(diff) > max_distance:
                        continue
                    # A pair within reach of several tables is reported by the first one only.
                    seen = False
                    for earlier in range(table):
                        if _popcount((diff >> np.uint64(shifts[earlier])) & masks[earlier]) <= radius:
                            seen = True
                            break
                    if seen:
                        continue
                    if found == out_rows.shape[0]:
                        return -1
                    out_rows[found] = query_id[q]
                    out_ids[found] = entry_id[e]
                    found += 1
    return found


@njit(cache=True, parallel=True)
def search(
    query_hashes: np.ndarray,
    query_ids: np.ndarray,
    query_starts: np.ndarray,
    hashes: np.ndarray,
    ids: np.ndarray,
    starts: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    flips: np.ndarray,
    radius: int,
    max_distance: int,
    parts: int,
    capacity: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs found by every (table, range of keys), each in its own slice of the output.

    Returns (rows, ids, counts): work item w's pairs are rows[w, :counts[w]]; counts[w] is -1
    where it found more than `capacity` pairs, so that the caller asks again with more room.
    """
    tables = hashes.shape[0]
    keys = query_starts.shape[1] - 1
    size = (keys + parts - 1) // parts
    rows = np.empty((tables * parts, capacity), dtype=np.int64)
    found_ids = np.empty((tables * parts, capacity), dtype=np.int64)
    counts = np.empty(tables * parts, dtype=np.int64)
    for w in prange(tables * parts):
        table, part = w // parts, w % parts
        counts[w] = _join_keys(
            part * size, min(keys, (part + 1) * size), table,
            query_hashes, query_ids, query_starts, hashes, ids, starts, shifts, masks, flips,
            radius, max_distance, rows[w], found_ids[w],
        )  # fmt: skip
    return rows, found_ids, counts
