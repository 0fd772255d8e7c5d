"""What tests and benchmarks read straight from the manifest: row counts, by table and condition."""

from __future__ import annotations

from core.manifest import Manifest


def count(manifest: Manifest, table: str, where: str = "1=1", *params: object) -> int:
    """Rows of `table` matching `where` (test code: the table and condition are the test's own)."""
    return int(manifest.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", params).fetchone()[0])
