"""The one manifest each stage extends with what it learned about a photo.

A SQLite file in the data folder by default; a PostgreSQL database when the layout names one
(core/manifest_postgres.py), for stages on several machines. Every photo is keyed by the SHA-256
of its bytes. Failures are rows with a reason, not crashes. The stages run only the named queries
of core/queries.py through it, the same on either engine.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from core.errors import ReviewlensError
from core.layout import Layout, redacted
from core.queries import Query

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    shop TEXT NOT NULL,
    product_id TEXT NOT NULL,
    category_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    rank INTEGER NOT NULL,
    seen_at TEXT NOT NULL,
    -- set once every review page of the product has been read; until then a crawl reads them all
    reviews_complete_at TEXT,
    PRIMARY KEY (shop, product_id)
);
CREATE TABLE IF NOT EXISTS photos (
    sha256 TEXT PRIMARY KEY,
    path TEXT NOT NULL,           -- relative to the store's root
    format TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    shop TEXT NOT NULL,
    review_id TEXT NOT NULL,
    photo_url TEXT NOT NULL,
    product_id TEXT NOT NULL,
    category_id INTEGER NOT NULL,
    sha256 TEXT NOT NULL REFERENCES photos(sha256),
    review_created_at TEXT,
    fetched_at TEXT NOT NULL,
    PRIMARY KEY (shop, review_id, photo_url)
);
CREATE INDEX IF NOT EXISTS sources_by_sha ON sources(sha256);
CREATE TABLE IF NOT EXISTS failures (
    shop TEXT NOT NULL,
    review_id TEXT NOT NULL,
    photo_url TEXT NOT NULL,
    product_id TEXT NOT NULL,
    category_id INTEGER NOT NULL,
    review_created_at TEXT,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_try TEXT NOT NULL,
    PRIMARY KEY (shop, review_id, photo_url)
);
-- An item of a shop's page the crawler could not read (a field missing or of another kind): the
-- page's other items were crawled. A page's rows are replaced each time the page is read.
CREATE TABLE IF NOT EXISTS bad_items (
    shop TEXT NOT NULL,
    page_url TEXT NOT NULL,
    place INTEGER NOT NULL,       -- the item's place in the page's list, from 0
    reason TEXT NOT NULL,         -- the field, and what it held instead
    seen_at TEXT NOT NULL,
    PRIMARY KEY (shop, page_url, place)
);
CREATE TABLE IF NOT EXISTS curation (
    sha256 TEXT PRIMARY KEY REFERENCES photos(sha256),
    status TEXT NOT NULL,         -- 'ok' or 'invalid'
    reason TEXT,
    phash TEXT,                   -- 64-bit perceptual hash, hex
    centre_hash TEXT,             -- pHash of the photo's middle 80%, hex
    group_id TEXT,                -- sha256 of the photo kept for the duplicate group
    is_kept INTEGER NOT NULL DEFAULT 0,
    -- the same photo was posted under more than one product: kept out of training
    is_ambiguous INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS estimates (
    sha256 TEXT PRIMARY KEY REFERENCES photos(sha256),
    coverage REAL,                -- share of the photo the product's box covers
    n_objects INTEGER NOT NULL,   -- confident objects found
    confidence REAL NOT NULL,     -- 0..1, see curation/preannotate/estimates.py
    coverage_verdict TEXT NOT NULL,   -- 'pass', 'fail' or 'unsure'
    objects_verdict TEXT NOT NULL,
    model_version TEXT NOT NULL,
    box TEXT                      -- the product's box: 'left,top,right,bottom' as fractions of the frame
);
-- Where the co-localiser found a product in its photos, fitted over all of them at once: kept so
-- that a push that failed midway, or one before the product has new photos, does not fit them again.
CREATE TABLE IF NOT EXISTS product_locations (
    shop TEXT NOT NULL,
    product_id TEXT NOT NULL,
    photos_digest TEXT NOT NULL,  -- SHA-256 of the sorted hashes of the photos it was fitted over
    localiser TEXT NOT NULL,      -- what located them (curation/preannotate/colocalise.py)
    locations TEXT NOT NULL,      -- JSON: each photo's hash to [left, top, right, bottom, n_objects, split]
    PRIMARY KEY (shop, product_id)
);
CREATE TABLE IF NOT EXISTS labels (
    sha256 TEXT PRIMARY KEY REFERENCES photos(sha256),
    project_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    pushed_at TEXT NOT NULL,
    annotation_id INTEGER,
    decision TEXT,                -- 'accept' or 'reject'
    reason TEXT,
    coverage REAL,
    n_objects INTEGER,
    decided_at TEXT,
    box TEXT,                     -- the person's box around the product: 'left,top,right,bottom' as fractions
    annotator TEXT,               -- who answered: the Label Studio user's e-mail
    lead_time REAL                -- seconds the person spent on the task, as Label Studio measured them
);
-- Every person's answer to a rules task, the latest of each annotator: with overlap, a photo has
-- two, and labels holds the decision that counts (theirs when they agree, else the reviewer's).
CREATE TABLE IF NOT EXISTS answers (
    sha256 TEXT NOT NULL REFERENCES photos(sha256),
    annotator TEXT NOT NULL,
    annotation_id INTEGER NOT NULL,
    updated_at TEXT NOT NULL,     -- as Label Studio gives it: an answer changed in place is seen
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    lead_time REAL,
    result TEXT NOT NULL,         -- the answer as Label Studio keeps it (JSON): shown to the reviewer
    PRIMARY KEY (sha256, annotator)
);
-- An answer the rules cannot read (a box with a coordinate that is no number, a choice the view
-- does not offer): its task waits undecided, and the row goes once the answer is corrected.
CREATE TABLE IF NOT EXISTS bad_answers (
    sha256 TEXT NOT NULL REFERENCES photos(sha256),
    annotator TEXT NOT NULL,
    annotation_id INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (sha256, annotator)
);
CREATE TABLE IF NOT EXISTS pull_marks (  -- how far a complete pull of a project has read
    project_id INTEGER PRIMARY KEY,
    updated_at TEXT NOT NULL      -- the newest task change it read, in Label Studio's own clock
);
CREATE TABLE IF NOT EXISTS reviews (  -- a photo its annotators decided differently, in the review project
    sha256 TEXT PRIMARY KEY REFERENCES photos(sha256),
    project_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    pushed_at TEXT NOT NULL,
    annotation_id INTEGER,
    decided_at TEXT
);
CREATE TABLE IF NOT EXISTS product_choices (  -- a person's choice for a photo posted under several products
    sha256 TEXT PRIMARY KEY REFERENCES photos(sha256),
    project_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    pushed_at TEXT NOT NULL,
    annotation_id INTEGER,
    product_id TEXT,              -- the chosen product; NULL while undecided or when none fits
    decided_at TEXT
);
-- The photos labeling and training may use, each with the one product it shows: the kept photo
-- of its duplicate group, posted under one product, or under several and a person chose one.
CREATE VIEW IF NOT EXISTS usable_photos AS
SELECT c.sha256, c.group_id, p.path, s.photo_url, s.review_created_at, s.shop,
    COALESCE(pc.product_id, s.product_id) AS product_id
FROM curation c
JOIN photos p USING (sha256)
JOIN sources s ON s.sha256 = c.sha256 AND s.rowid = (SELECT MIN(rowid) FROM sources WHERE sha256 = c.sha256)
LEFT JOIN product_choices pc ON pc.sha256 = c.sha256
WHERE c.status = 'ok' AND c.is_kept = 1 AND (c.is_ambiguous = 0 OR pc.product_id IS NOT NULL);
CREATE TABLE IF NOT EXISTS intact_photos (  -- when a stored file last hashed to its name
    sha256 TEXT PRIMARY KEY REFERENCES photos(sha256),
    bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS splits (
    snapshot TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    split TEXT NOT NULL,          -- 'train', 'val' or 'test'
    PRIMARY KEY (snapshot, sha256)
);
"""


# The review id under which the shop's own photo of a product is kept: it is not a review, but it
# shows the product as the shop sells it, so search finds the product from its first day.
CATALOG_REVIEW = "catalog"


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string, the manifest's one time format."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class Row(Protocol):
    """A result row, by position or by column name (sqlite3.Row, or its PostgreSQL twin)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Writer:
    """The writes of one transaction: named queries only."""

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest

    def run(self, query: Query, *params: Any) -> None:
        self._manifest.conn.execute(self._manifest.spelling(query), params)

    def run_many(self, query: Query, rows: Iterable[Sequence[Any]]) -> None:
        self._manifest.conn.cursor().executemany(self._manifest.spelling(query), rows)


class NoManifest(ReviewlensError):
    """No manifest where one was expected: a stage after the crawl, or a mistyped --data-dir."""


class DamagedManifest(ReviewlensError):
    """A manifest file SQLite cannot read."""


class Manifest:
    """A connection to the manifest, on either engine; open one with `open_manifest`.

    `conn` is the engine's DB-API connection in autocommit mode: every write happens inside an
    explicit transaction(), which starts by taking the manifest's one write lock (SQLite's
    BEGIN IMMEDIATE, a PostgreSQL advisory lock), so writers on any number of machines take turns
    and a transaction that reads before it writes sees every write committed before it.
    """

    def __init__(self, conn: Any, where: str, postgres: bool = False) -> None:
        self.conn = conn
        self.where = where
        self.postgres = postgres

    def spelling(self, query: Query) -> str:
        """The query as this manifest's engine reads it."""
        return query.postgres if self.postgres else query

    def rows(self, query: Query, *params: Any) -> list[Row]:
        """Every row `query` returns."""
        rows: list[Row] = self.conn.execute(self.spelling(query), params).fetchall()
        return rows

    def row(self, query: Query, *params: Any) -> Row | None:
        """The first row `query` returns, or None."""
        row: Row | None = self.conn.execute(self.spelling(query), params).fetchone()
        return row

    def scalar(self, query: Query, *params: Any) -> int:
        """The single number a COUNT query returns."""
        return int(self.conn.execute(self.spelling(query), params).fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[Writer]:
        """Runs the block's writes as one transaction: all land or none do."""
        if self.postgres:
            from core.manifest_postgres import begin

            begin(self.conn)
        else:
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield Writer(self)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def write(self, query: Query, *params: Any) -> None:
        """Runs one write as its own transaction."""
        with self.transaction() as db:
            db.run(query, *params)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_manifest(layout: Layout, create: bool = False) -> Manifest:
    """The layout's manifest: its PostgreSQL database when it names one, else its SQLite file.

    Only the crawl (and an import), which start a data folder, may `create` one: every later
    stage refuses a place without a manifest, as it is most often a mistyped data folder or URL.
    """
    if layout.database_url:
        from core.manifest_postgres import connect

        return Manifest(connect(layout.database_url, create), redacted(layout.database_url), postgres=True)
    return Manifest(_open_sqlite(layout.manifest_path, create), str(layout.manifest_path))


def _open_sqlite(path: Path, create: bool) -> sqlite3.Connection:
    if not path.exists():
        if not create:
            raise NoManifest(f"no manifest at {path}: crawl into this data folder first, or check --data-dir")
        path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: every write happens inside an explicit transaction().
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    conn.row_factory = sqlite3.Row
    try:
        # WAL lets a reader (a report, a flow) look while a crawl writes; a killed writer leaves
        # the last committed state.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        _migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DamagedManifest(
            f"the manifest at {path} cannot be read ({exc}): restore it from a copy, or move it "
            "away and crawl again (the photo store is kept)"
        ) from exc
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Adds columns that manifests written by earlier versions lack."""
    for table, column, kind in (
        ("curation", "centre_hash", "TEXT"),
        ("estimates", "box", "TEXT"),
        ("labels", "box", "TEXT"),
        ("labels", "annotator", "TEXT"),
        ("labels", "lead_time", "REAL"),
    ):
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
