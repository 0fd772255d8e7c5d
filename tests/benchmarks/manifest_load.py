"""1,000,000 photo rows written by 4 writers at once, into PostgreSQL and into SQLite, in one run.

Each writer is its own process with its own connection, and writes through the stages' named
queries (INSERT_PHOTO, INSERT_CHECK) in transactions of 5,000 photos, as a crawl and a dedupe do.
The writers' ranges overlap by a tenth, as two crawls reaching the same photos do: afterwards
each engine must hold exactly the distinct photos, none lost and none twice. Then the query dedupe
reads every hash with (HASHED_PHOTOS) is timed at that size. PostgreSQL runs with fsync on, as
SQLite's WAL does.

    .venv/bin/python -m tests.benchmarks.manifest_load [--rows N]
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from core import queries as q
from core.layout import Layout
from core.manifest import open_manifest
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from tests.postgres import PostgresServer

WRITERS = 4
BATCH = 5_000


def _photo(i: int) -> tuple[tuple[object, ...], tuple[object, ...]]:
    sha = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
    phash = f"{int(sha[:16], 16) ^ (i % 7):016x}"
    photo = (sha, f"{sha[:2]}/{sha}.jpg", "JPEG", 640, 480, 50_000 + i % 1000, "2026-11-28T00:00:00+00:00")
    return photo, (sha, "ok", None, phash, phash)


def _write(layout: Layout, start: int, stop: int) -> int:
    with open_manifest(layout) as manifest:
        for first in range(start, stop, BATCH):
            rows = [_photo(i) for i in range(first, min(first + BATCH, stop))]
            with manifest.transaction() as db:
                db.run_many(q.INSERT_PHOTO, [photo for photo, _ in rows])
                db.run_many(q.INSERT_CHECK, [check for _, check in rows])
    return stop - start


def _load(layout: Layout, n_rows: int) -> dict[str, float]:
    open_manifest(layout, create=True).close()
    share = n_rows // WRITERS
    # Each writer also writes the first tenth of the next writer's range: those rows arrive twice.
    ranges = [(w * share, min(n_rows, (w + 1) * share + share // 10)) for w in range(WRITERS)]
    started = time.monotonic()
    with ProcessPoolExecutor(WRITERS) as pool:
        written = sum(pool.map(_write, [layout] * WRITERS, *zip(*ranges, strict=True)))
    seconds = time.monotonic() - started
    with open_manifest(layout) as manifest:
        stored = manifest.scalar(q.Query("SELECT COUNT(*) FROM photos"))
        distinct = manifest.scalar(q.Query("SELECT COUNT(DISTINCT sha256) FROM photos"))
        checked = manifest.scalar(q.Query("SELECT COUNT(*) FROM curation"))
        started = time.monotonic()
        hashed = len(manifest.rows(q.HASHED_PHOTOS))
        query_s = time.monotonic() - started
    return {
        "rows_per_s": written / seconds,
        "written": written,
        "lost": n_rows - distinct,
        "duplicated": stored - distinct,
        "checks_lost": n_rows - checked,
        "hashed_rows": hashed,
        "dedupe_query_s": query_s,
    }


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--rows", type=int, default=sized(1_000_000, 2_000))
    rows = parser.parse_args().rows
    results = {}
    with tempfile.TemporaryDirectory() as folder, PostgresServer(fsync=True) as postgres:
        results["sqlite"] = _load(Layout(Path(folder) / "sqlite", database_url=None), rows)
        results["postgres"] = _load(Layout(Path(folder) / "pg", database_url=postgres.new_database()), rows)
    for engine, r in results.items():
        print(
            f"{engine}: {r['rows_per_s']:,.0f} photo rows/s ({r['written']:,} written by {WRITERS} writers), "
            f"lost {r['lost']}, duplicated {r['duplicated']}, checks lost {r['checks_lost']}, "
            f"dedupe query {r['dedupe_query_s']:.2f} s for {r['hashed_rows']:,} rows"
        )
    lost = sum(r["lost"] + r["duplicated"] + r["checks_lost"] for r in results.values())
    print(f"postgres_over_sqlite_rows_per_s: {results['postgres']['rows_per_s'] / results['sqlite']['rows_per_s']:.2f}")
    print(f"rows_lost_or_duplicated: {lost}")
    print(f"postgres_rows_per_s: {results['postgres']['rows_per_s']:.0f}")


if __name__ == "__main__":
    main()
