"""What tests and benchmarks read straight from the manifest, on either engine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from core.layout import Layout
from core.manifest import Manifest, open_manifest
from core.queries import Query


def run(manifest: Manifest, sql: str, params: Sequence[Any] = ()) -> Any:
    """Runs the test's own SQL (SQLite's, `?` parameters) on the manifest's engine: its cursor."""
    return manifest.conn.execute(manifest.spelling(Query(sql)), params)


def run_many(manifest: Manifest, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    manifest.conn.cursor().executemany(manifest.spelling(Query(sql)), rows)


def count(manifest: Manifest, table: str, where: str = "1=1", *params: object) -> int:
    """Rows of `table` matching `where` (test code: the table and condition are the test's own)."""
    return int(run(manifest, f"SELECT COUNT(*) FROM {table} WHERE {where}", params).fetchone()[0])


def crawled(layout: Layout) -> dict[str, list[tuple[object, ...]]]:
    """What a crawl wrote, engine aside: the rows of each table, without times of day."""
    tables = {
        "products": "SELECT shop, product_id, category_id, name, url, rank FROM products",
        "photos": "SELECT sha256, path, format, width, height, bytes FROM photos",
        "sources": "SELECT shop, review_id, photo_url, product_id, category_id, sha256, review_created_at FROM sources",
        "failures": "SELECT shop, review_id, photo_url, reason FROM failures",
    }
    with open_manifest(layout) as m:
        return {table: sorted(tuple(r) for r in run(m, sql).fetchall()) for table, sql in tables.items()}
