"""The one manifest: a SQLite file each stage extends with what it learned about a photo.

Every photo is keyed by the SHA-256 of its bytes. Failures are rows with a reason, not crashes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

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
    confidence REAL NOT NULL,     -- 0..1, see curation/estimates.py
    coverage_verdict TEXT NOT NULL,   -- 'pass', 'fail' or 'unsure'
    objects_verdict TEXT NOT NULL,
    model_version TEXT NOT NULL,
    box TEXT                      -- the product's box: 'left,top,right,bottom' as fractions of the frame
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
CREATE TABLE IF NOT EXISTS splits (
    snapshot TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    split TEXT NOT NULL,          -- 'train', 'val' or 'test'
    PRIMARY KEY (snapshot, sha256)
);
"""


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string, the manifest's one time format."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class Manifest:
    """A connection to the manifest, its schema created on first open."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every write happens inside an explicit transaction() below.
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        # WAL lets a reader (a report, a flow) look while a crawl writes; a killed writer
        # leaves the last committed state.
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Adds columns that manifests written by earlier versions lack."""
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(curation)")}
        if "centre_hash" not in columns:
            self.conn.execute("ALTER TABLE curation ADD COLUMN centre_hash TEXT")
        if "box" not in {r[1] for r in self.conn.execute("PRAGMA table_info(estimates)")}:
            self.conn.execute("ALTER TABLE estimates ADD COLUMN box TEXT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Runs the block's writes as one transaction: all land or none do."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def count(self, table: str, where: str = "1=1", *params: object) -> int:
        """Number of rows of `table` matching `where`."""
        row = self.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", params).fetchone()
        return int(row[0])

    def record_pushed(self, table: str, project_id: int, task_ids: dict[str, int]) -> None:
        """Notes in `table` (labels or product_choices) the Label Studio task of each photo.

        A photo noted already keeps its row: pushing again never forgets a decision.
        """
        if table not in ("labels", "product_choices"):
            raise ValueError(f"not a table of pushed tasks: {table}")
        now = utc_now()
        with self.transaction() as db:
            db.executemany(
                f"INSERT OR IGNORE INTO {table} (sha256, project_id, task_id, pushed_at) VALUES (?,?,?,?)",
                [(sha, project_id, task_id, now) for sha, task_id in task_ids.items()],
            )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
