"""A crawl of a shop whose pages hold hostile items, on a real socket: each item that does not
read costs that item alone (a bad_items row naming the page and the field), a product listed
twice is crawled once, and the crawl goes on to the next product and category."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import CrawlConfig, from_mapping
from crawler.crawl import crawl
from tests.db import run
from tests.procs import http_server


def _photo(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (seed * 40 % 256, 90, 160)).save(out, "PNG")
    return out.getvalue()


def _review(n: int, host: str) -> dict[str, object]:
    return {"id": n, "created_at": "2026-01-01", "card": {"image_url": f"http://{host}/photos/{n}.png"},
            "production_information": {"name": f"Product of review {n}"}}  # fmt: skip


class _HostileShop(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        host = self.headers["Host"]
        body: object
        if url.path == "/commerces/ranks.json":
            first = query.get("page") == "1"
            if query["category"] == "1" and first:
                # A product listed twice, an item that is no object, a count that is no count, and one that reads.
                body = {"products": [{"id": 10, "review_count": 2}, "11", {"id": 12, "review_count": "abc"},
                                     {"id": 10, "review_count": 2}, {"id": 13, "review_count": 1}]}  # fmt: skip
            elif query["category"] == "2" and first:
                body = {"products": [{"id": 20, "review_count": 1}]}
            else:
                body = {"products": []}
        elif url.path == "/production_reviews.json":
            product = query["production_id"]
            if query.get("page") != "1":
                body = {"reviews": []}
            elif product == "10":
                body = {"reviews": [_review(100, host), {"id": 101, "card": "a string"}, _review(102, host)]}
            else:
                body = {"reviews": [_review(int(product) * 10, host)]}
        elif url.path.startswith("/photos/"):
            data = _photo(int(Path(url.path).stem))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile_shop() -> Iterator[str]:
    with http_server(_HostileShop) as host:
        yield host


def test_hostile_items_cost_themselves_alone_and_a_product_listed_twice_is_crawled_once(
    hostile_shop: str, tmp_path: Path
) -> None:
    url = f"http://{hostile_shop}"
    config = from_mapping(CrawlConfig, {
        "shop_url": url, "ranking_url": url, "image_hosts": [hostile_shop], "categories": [1, 2], "top_n": 5,
        "catalog_photos": False, "backoff_s": 0.01, "api_rate": 200.0, "image_rate": 500.0,
    })  # fmt: skip
    layout = Layout(tmp_path / "data", database_url=None)
    summary = crawl(config, layout)
    assert summary.products == 3 and summary.photos_stored == 4 and summary.bad_items == 3
    assert "3 page items unreadable (table bad_items)" in str(summary)
    with open_manifest(layout) as m:
        products = [r[0] for r in run(m, "SELECT product_id FROM products ORDER BY product_id")]
        reviews = sorted(r[0] for r in run(m, "SELECT review_id FROM sources"))
        bad = run(m, "SELECT page_url, place, reason FROM bad_items ORDER BY page_url, place").fetchall()
    assert products == ["10", "13", "20"]  # 10 once, though listed twice; the category after it too
    assert reviews == ["100", "102", "130", "200"]
    assert [(urlsplit(u).path, place, reason.split("'")[1]) for u, place, reason in bad] == [
        ("/commerces/ranks.json", 1, "products"),
        ("/commerces/ranks.json", 2, "review_count"),
        ("/production_reviews.json", 1, "card.image_url"),
    ]
    # Read again, the same pages keep one row per bad item, not one per reading.
    crawl(config, layout)
    with open_manifest(layout) as m:
        assert run(m, "SELECT COUNT(*) FROM bad_items").fetchone()[0] == 3
