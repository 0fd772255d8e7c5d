"""Near-duplicate search at scale: 1,000,000 hashes, random plus planted near duplicates.

Checks that the index finds exactly the pairs brute force finds (on a 20,000-hash subset), then
times range queries against all 1M: the multi-index hash vs a vectorized brute-force scan.

    .venv/bin/python -m tests.benchmarks.neardup_scale
"""

from __future__ import annotations

import time

import numpy as np

from curation.neardup import MultiIndex, pairs_brute, pairs_indexed
from reviewlens.settings import DedupeConfig

N = 1_000_000
PLANTED = 50_000


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


def main() -> None:
    rng = np.random.default_rng(0)
    hashes = make_hashes(rng)
    print(f"hashes: {N} ({PLANTED} planted 0..12 bits from another)")
    subset = hashes[:20_000]
    for d in (6, 8, 10):
        same = pairs_indexed(subset, subset, d) == pairs_brute(subset, subset, d)
        print(f"identical_pairs_to_brute_force_at_{d}_on_20000: {same}")

    started = time.monotonic()
    index = MultiIndex(hashes)
    print(f"index_build_s: {time.monotonic() - started:.1f}")
    queries = hashes[rng.integers(0, N, size=20_000)]
    results = {}
    for d in (6, 8, DedupeConfig().max_distance):
        started = time.monotonic()
        for q in queries[:100]:
            np.nonzero(np.bitwise_count(hashes ^ q) <= d)
        brute_qps = 100 / (time.monotonic() - started)
        started = time.monotonic()
        index.query(queries, d)
        index_qps = len(queries) / (time.monotonic() - started)
        results[d] = index_qps / brute_qps
        print(
            f"distance {d}: brute force {brute_qps:.0f} queries/s, index {index_qps:.0f} queries/s, "
            f"ratio {results[d]:.1f}; all pairs of 1M: {N / index_qps / 60:.1f} min vs {N / brute_qps / 60:.1f} min"
        )
    print(f"index_speedup_at_{DedupeConfig().max_distance}: {results[DedupeConfig().max_distance]:.1f}")


if __name__ == "__main__":
    main()
