"""Near-duplicate search at scale: 1,000,000 hashes, random plus planted near duplicates.

Checks that the index finds exactly the pairs brute force finds (on a 20,000-hash subset), then
times range queries against all 1M: the multi-index hash vs a vectorized brute-force scan
(numpy's popcount over the whole array, one core). Two workloads: 20,000 random queries, and
every one of the 1M hashes as a query (the all-pairs join that dedupe runs). The headline
ratio is the all-pairs join on one core against brute force on one core; the figure with every
core is printed beside it.

    .venv/bin/python -m tests.benchmarks.neardup_scale [--tables 4]
"""

from __future__ import annotations

import time

import numba
import numpy as np

from core.settings import DedupeConfig
from curation.dedupe.neardup import TABLES, MultiIndex, pairs_brute, pairs_indexed
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized

N = sized(1_000_000, 30_000)
PLANTED = sized(50_000, 1_500)


def make_hashes(rng: np.random.Generator) -> np.ndarray:
    hashes = rng.integers(0, 2**64 - 1, size=N, dtype=np.uint64, endpoint=True)
    src = rng.integers(0, N, size=PLANTED)
    dst = rng.integers(0, N, size=PLANTED)
    flips = np.zeros(PLANTED, dtype=np.uint64)
    for k in range(PLANTED):  # 0..12 bits away from a random other hash
        for b in rng.choice(64, size=k % 13, replace=False):
            flips[k] |= np.uint64(1) << np.uint64(b)
    hashes[dst] = hashes[src] ^ flips
    return hashes


def brute_force_qps(hashes: np.ndarray, queries: np.ndarray, d: int) -> float:
    started = time.monotonic()
    for q in queries:
        np.nonzero(np.bitwise_count(hashes ^ q) <= d)
    return len(queries) / (time.monotonic() - started)


def index_qps(index: MultiIndex, queries: np.ndarray | None, d: int, threads: int) -> float:
    """Queries per second of `index` on `threads` cores; None asks every indexed hash."""
    numba.set_num_threads(threads)
    started = time.monotonic()
    index.self_join(d) if queries is None else index.search(queries, d)
    elapsed = time.monotonic() - started
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return (index.size if queries is None else len(queries)) / elapsed


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--tables", type=int, default=TABLES)
    args = parser.parse_args()
    cores = numba.config.NUMBA_NUM_THREADS
    rng = np.random.default_rng(0)
    hashes = make_hashes(rng)
    print(f"hashes: {N} ({PLANTED} planted 0..12 bits from another); tables {args.tables}; cores {cores}")
    subset = hashes[: sized(20_000, 2_000)]
    for d in (6, 8, 10):
        same = pairs_indexed(subset, subset, d) == pairs_brute(subset, subset, d)
        same &= MultiIndex(subset, args.tables).query(subset[::3], d) == pairs_brute(subset[::3], subset, d)
        print(f"identical_pairs_to_brute_force_at_{d}_on_20000: {same}")

    started = time.monotonic()
    index = MultiIndex(hashes, args.tables)
    index.search(hashes[:10], 0)  # loads the compiled join before anything is timed
    print(f"index_build_s: {time.monotonic() - started:.1f}")
    queries = hashes[rng.integers(0, N, size=sized(20_000, 2_000))]
    default = DedupeConfig().max_distance
    headline = 0.0
    for d in (6, 8, default):
        brute = brute_force_qps(hashes, queries[:100], d)
        random_1, random_all = (index_qps(index, queries, d, t) for t in (1, cores))
        join_1, join_all = (index_qps(index, None, d, t) for t in (1, cores))
        print(
            f"distance {d}: brute force {brute:.0f} queries/s (1 core); "
            f"20,000 random queries {random_1:.0f}/s (1 core, {random_1 / brute:.1f}x), "
            f"{random_all:.0f}/s ({cores} cores, {random_all / brute:.1f}x); "
            f"all 1M as queries {join_1:.0f}/s (1 core, {join_1 / brute:.1f}x), "
            f"{join_all:.0f}/s ({cores} cores, {join_all / brute:.1f}x); "
            f"all pairs of 1M: {N / join_all:.1f} s vs {N / brute / 60:.1f} min"
        )
        headline = join_1 / brute
    print(f"index_speedup_at_{default}: {headline:.1f}")


if __name__ == "__main__":
    main()
