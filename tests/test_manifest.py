"""The manifest on either engine: every named query, stages at once, and an unreachable database."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from core import queries as q
from core.layout import Layout
from core.manifest import open_manifest
from core.manifest_postgres import ManifestUnreachable
from crawler.crawl import crawl
from demo.shop.server import DemoShop
from tests.conftest import crawl_config
from tests.db import count, crawled
from tests.postgres import PostgresServer
from tests.procs import free_port

NAMED = {name: query for name, query in vars(q).items() if isinstance(query, q.Query)}


def _numbered(sql: str) -> str:
    """psycopg's `%s` parameters as the server's own `$1, $2, ...`, for a bare PREPARE."""
    numbers = iter(range(1, 1000))
    return re.sub(r"%s", lambda _: f"${next(numbers)}", sql)


def _prepare_error(conn: psycopg.Connection, name: str, sql: str) -> str:
    result = conn.pgconn.prepare(name.encode(), _numbered(sql).encode())
    return (result.error_message or b"").decode().strip()


def test_every_named_query_is_valid_on_both_engines(postgres: PostgresServer, tmp_path: Path) -> None:
    assert len(NAMED) > 60
    layout = Layout(tmp_path, database_url=postgres.new_database())
    with open_manifest(layout, create=True) as m:
        # PostgreSQL parses, resolves and types each against the schema without running it.
        errors = {name: _prepare_error(m.conn, name.lower(), query.postgres) for name, query in NAMED.items()}
        assert {name: error for name, error in errors.items() if error} == {}
        # The check can fail: SQLite's own spelling of a query the engines spell differently.
        sqlite_spelling = q.Query(str(q.GROUP_MEMBERS)).postgres
        assert "group_concat" in _prepare_error(m.conn, "sqlite_spelling", sqlite_spelling)
    with open_manifest(Layout(tmp_path / "sqlite", database_url=None), create=True) as m:
        for query in NAMED.values():
            numbered = [int(n) for n in re.findall(r"\?(\d+)", query)]
            m.conn.execute(f"EXPLAIN {query}", [None] * (max(numbered) if numbered else query.count("?")))


def test_a_database_url_keeps_the_manifest_there_and_no_password_shows(
    postgres: PostgresServer, shop: DemoShop, tmp_path: Path
) -> None:
    url = postgres.new_database()
    layout = Layout(tmp_path / "data", database_url=url)
    summary = crawl(crawl_config(shop, top_n=1), layout)
    assert summary.photos_stored > 0
    assert not layout.manifest_path.exists()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0] == summary.photos_stored
    with open_manifest(layout) as m:  # a literal % (a LIKE pattern) reads the same on PostgreSQL
        assert count(m, "photos", "path LIKE '%.jpg' AND format = ?", "JPEG") == summary.photos_stored
    # A URL with a password: every message and the layout's repr leave it out.
    secret = "s3cret-Pw"
    assert secret not in repr(Layout(tmp_path, database_url=f"postgresql://u:{secret}@127.0.0.1:1/x"))


def test_an_unreachable_database_is_one_clear_error_without_the_password(tmp_path: Path) -> None:
    secret = "s3cret-Pw"
    layout = Layout(tmp_path, database_url=f"postgresql://reviewlens:{secret}@127.0.0.1:{free_port()}/manifest")
    started = time.monotonic()
    with pytest.raises(ManifestUnreachable) as caught:
        open_manifest(layout)
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert "REVIEWLENS_DATABASE_URL" in message and "127.0.0.1" in message
    assert secret not in message and "***" in message
    done = subprocess.run(
        [sys.executable, "-m", "reviewlens.cli", "dedupe", "--data-dir", str(tmp_path)],
        env={**os.environ, "REVIEWLENS_DATABASE_URL": layout.database_url or ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "cannot be reached" in done.stderr and secret not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.both_engines
def test_two_crawls_at_once_end_as_one_after_the_other(
    shop: DemoShop, layout: Layout, crawled_state: Path, tmp_path: Path
) -> None:
    config_file = tmp_path / "crawl.json"
    config_file.write_text(json.dumps(crawl_config(shop).__dict__))
    args = [sys.executable, "-m", "reviewlens.cli", "crawl", "--data-dir", str(layout.data_dir)]
    runs = [subprocess.Popen([*args, "--config", str(config_file)], stderr=subprocess.PIPE, text=True) for _ in "ab"]
    for each in runs:
        _, err = each.communicate(timeout=300)
        assert each.returncode == 0, err[-2000:]

    # One crawl after the other: the run's first crawl, copied, and a second one.
    one_after_the_other = Layout(tmp_path / "sequential", database_url=None)
    shutil.copytree(crawled_state, one_after_the_other.data_dir)
    crawl(crawl_config(shop), one_after_the_other)
    both = crawled(layout)
    assert both == crawled(one_after_the_other)
    assert len(both["photos"]) == len(both["sources"]) > 0
    files = sorted(p.name for p in layout.store_dir.rglob("*") if p.is_file())
    assert files == sorted(p.name for p in one_after_the_other.store_dir.rglob("*") if p.is_file())
