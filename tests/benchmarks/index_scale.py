"""Search time as the index grows: exact (a flat scan) versus the index's approximate search (IVF),
at 10k, 100k and 1M stored embeddings, and the approximate search's recall@10 against exact.

The embeddings are generated the way a shop's look: unit vectors of the search embedding's
width, 50 photos per product scattered around the product's direction (a photo's cosine to its
product's direction is about 0.8, as the trained embedding's are); the queries are further photos
of the same products. Both searches answer the same 1,000 queries in one batch.

Beside one `add` of every vector, the index is also built as the index stage builds it: batches
of 2,048 added and appended to the saved index one after another, the approximate index written
once at the end (goal at 1M: under 2x the one add); then loaded back from disk (goal: under 5 s).

    .venv/bin/python -m tests.benchmarks.index_scale [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from search.indexing import BATCH
from search.product_index import Entry, ProductIndex, ivf_lists
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from training.embedding import DIM

PHOTOS_PER_PRODUCT = 50
QUERIES = 1_000


def photos_of(centres: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    products = rng.integers(0, len(centres), n)
    noise = rng.standard_normal((n, centres.shape[1]), dtype=np.float32) * (0.75 / np.sqrt(centres.shape[1]))
    x = centres[products] + noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at_10(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(t)) / 10 for a, t in zip(rows, truth, strict=True)]))


def entries(start: int, stop: int) -> list[Entry]:
    return [Entry(str(i), str(i // PHOTOS_PER_PRODUCT)) for i in range(start, stop)]


def timed(search: faiss.Index | ProductIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    search.search(queries[:10], k)  # warm
    started = time.perf_counter()
    _, rows = search.search(queries, k)
    return rows, time.perf_counter() - started


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=sized([10_000, 100_000, 1_000_000], [2_000]))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, width {DIM}")
    speedup = recall = load_s = build_ratio = 0.0
    for size in args.sizes:
        centres = rng.standard_normal((size // PHOTOS_PER_PRODUCT, DIM), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        vectors, queries = photos_of(centres, size, rng), photos_of(centres, QUERIES, rng)
        exact = faiss.IndexFlatIP(DIM)
        exact.add(vectors)
        started = time.perf_counter()
        index = ProductIndex(DIM, "bench", approximate_from=1)
        index.add(entries(0, size), vectors)
        build = time.perf_counter() - started
        truth, exact_s = timed(exact, queries, 10)
        approx, approx_s = timed(index, queries, 10)
        recall = recall_at_10(approx, truth)
        speedup = exact_s / approx_s
        print(
            f"{size:>9,} photos: exact {1000 * exact_s / QUERIES:.3f} ms/query, approximate (IVF, "
            f"{index.probe} of {ivf_lists(size):,} lists) {1000 * approx_s / QUERIES:.3f} ms/query, "
            f"{speedup:.1f}x; recall@10 {recall:.3f}; one add of them all {build:.1f} s"
        )
        with tempfile.TemporaryDirectory(prefix="reviewlens-index-") as folder:
            started = time.perf_counter()
            grown = ProductIndex(DIM, "bench", approximate_from=1)
            for at in range(0, size, BATCH):
                grown.add(entries(at, min(size, at + BATCH)), vectors[at : at + BATCH])
                grown.save(Path(folder) / "index", approximate_index=False)
            grown.save(Path(folder) / "index")
            batchwise = time.perf_counter() - started
            started = time.perf_counter()
            loaded = ProductIndex.load(Path(folder) / "index")
            load_s = time.perf_counter() - started
            rows, _ = timed(loaded, queries, 10)
            found = recall_at_10(rows, truth)
        build_ratio = batchwise / build
        print(
            f"    built as the index stage does (batches of {BATCH:,}, each saved): {batchwise:.1f} s, "
            f"{build_ratio:.2f}x one add; loaded in {load_s:.2f} s; its recall@10 {found:.3f}"
        )
        del grown, loaded
        if size == max(args.sizes):  # what each number of lists scanned costs and finds
            for probe in (4, 8, 12, 16, 24, 32, 48):
                faiss.extract_index_ivf(index._faiss).nprobe = probe
                rows, seconds = timed(index, queries, 10)
                found = recall_at_10(rows, truth)
                print(f"    scanning {probe:>2} lists: {exact_s / seconds:5.1f}x exact's speed, recall@10 {found:.3f}")
        del exact, index
    print(f"index_load_seconds_largest: {load_s:.2f}")
    print(f"index_build_ratio_largest: {build_ratio:.2f}")
    print(f"recall_at_10_largest: {recall:.3f}")
    print(f"index_speedup_largest: {speedup:.1f}")


if __name__ == "__main__":
    main()
