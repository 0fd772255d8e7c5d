"""HTTP servers for the demo shop: one for pages and JSON, one for photos, as the real shop has.

Paths and JSON shapes follow ../shared/docs/ohouse.md, so the crawler's Ohouse adapter reads both.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reviewlens.demoshop.generate import PhotoTruth, Product, load_catalog

log = logging.getLogger(__name__)

REVIEWS_PER_PAGE = 5  # as last observed on the real shop
ROBOTS = "User-agent: *\nDisallow: /admin\n"


@dataclass
class ShopData:
    products: list[Product]
    reviews: dict[int, list[PhotoTruth]]  # product id -> reviews, newest first
    photos_dir: Path

    @classmethod
    def load(cls, out_dir: Path) -> ShopData:
        rows = json.loads((out_dir / "truth.json").read_text())
        reviews: dict[int, list[PhotoTruth]] = defaultdict(list)
        for r in rows:
            t = PhotoTruth(**{**r, "bbox": tuple(r["bbox"])})
            reviews[t.product_id].append(t)
        for items in reviews.values():
            items.sort(key=lambda t: t.created_at, reverse=True)
        return cls(load_catalog(out_dir), dict(reviews), out_dir / "photos")


class _Handler(BaseHTTPRequestHandler):
    server: _ShopServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self.server.record(self.path, self.headers.get("User-Agent", ""))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            self.server.route(self, url.path, query)
        except (KeyError, ValueError) as exc:
            self.send_body(400, "application/json", json.dumps({"error": str(exc)}).encode())

    def send_body(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _ShopServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, shop: DemoShop) -> None:
        super().__init__((host, port), _Handler)
        self.shop = shop

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def record(self, path: str, user_agent: str) -> None:
        self.shop.record(self.base_url, path, user_agent)

    def route(self, h: _Handler, path: str, q: dict[str, str]) -> None:
        raise NotImplementedError


class _ApiServer(_ShopServer):
    def route(self, h: _Handler, path: str, q: dict[str, str]) -> None:
        shop = self.shop
        if path == "/robots.txt":
            h.send_body(200, "text/plain", ROBOTS.encode())
        elif path == "/ranks":
            h.send_body(200, "text/html; charset=utf-8", shop.ranking_html(int(q["category_id"])).encode())
        elif path == "/commerces/ranks.json":
            body = shop.ranking_json(int(q["category"]), int(q.get("page", 1)), int(q.get("per", 20)))
            h.send_body(200, "application/json", json.dumps(body).encode())
        elif path == "/production_reviews.json":
            body = shop.reviews_json(int(q["production_id"]), int(q.get("page", 1)))
            h.send_body(200, "application/json", json.dumps(body).encode())
        elif path.startswith("/productions/") and path.endswith("/selling"):
            h.send_body(200, "text/html; charset=utf-8", shop.product_html(int(path.split("/")[2])).encode())
        else:
            h.send_body(404, "text/plain", b"not found")


class _ImageServer(_ShopServer):
    def route(self, h: _Handler, path: str, q: dict[str, str]) -> None:
        if path == "/robots.txt":
            h.send_body(200, "text/plain", ROBOTS.encode())
            return
        name = path.rsplit("/", 1)[-1]
        file = self.shop.data.photos_dir / name
        # Only names the generator wrote are served: no path from the URL reaches the disk.
        if path.startswith("/reviews/") and name in self.shop.photo_names:
            h.send_body(200, "image/jpeg", file.read_bytes())
        else:
            h.send_body(404, "text/plain", b"not found")


class DemoShop:
    """The demo shop's two servers over one generated catalog; `start()` serves in threads."""

    def __init__(
        self,
        out_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        image_port: int = 0,
        request_log: Path | None = None,
    ) -> None:
        self.data = ShopData.load(Path(out_dir))
        self.photo_names = {f"{t.photo_id}.jpg" for items in self.data.reviews.values() for t in items if t.photo_id}
        self.products = {p.product_id: p for p in self.data.products}
        self._api = _ApiServer(host, port, self)
        self._images = _ImageServer(host, image_port, self)
        self._log_lock = threading.Lock()
        self._request_log = open(request_log, "a", encoding="utf-8") if request_log else None  # noqa: SIM115
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return self._api.base_url

    @property
    def image_url(self) -> str:
        return self._images.base_url

    def record(self, base: str, path: str, user_agent: str) -> None:
        """Appends one request to the request log, for tests that check the crawler's manners."""
        if self._request_log is None:
            return
        line = json.dumps({"t": datetime.now(UTC).timestamp(), "host": base, "path": path, "ua": user_agent})
        with self._log_lock:
            self._request_log.write(line + "\n")
            self._request_log.flush()

    def start(self) -> DemoShop:
        for server in (self._api, self._images):
            t = threading.Thread(target=server.serve_forever, name=f"demo-shop {server.base_url}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for server in (self._api, self._images):
            server.shutdown()
            server.server_close()
        if self._request_log:
            self._request_log.close()

    def __enter__(self) -> DemoShop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the shop's pages and JSON ---

    def _ranked(self, category_id: int) -> list[Product]:
        ranked = [p for p in self.data.products if p.category_id == category_id]
        if not ranked:
            raise KeyError(f"no category {category_id}")
        return sorted(ranked, key=lambda p: p.rank)

    def ranking_json(self, category_id: int, page: int, per: int) -> dict[str, Any]:
        ranked = self._ranked(category_id)[(page - 1) * per : page * per]
        return {
            "products": [
                {
                    "id": p.product_id,
                    "name": p.name,
                    "brand_name": "reviewlens demo",
                    "review_count": sum(1 for _ in self.data.reviews.get(p.product_id, [])),
                    "selling_price": 10000 + 1000 * p.rank,
                }
                for p in ranked
            ]
        }

    def ranking_html(self, category_id: int) -> str:
        # Class names are generated, as in the real Next.js page: select by link pattern instead.
        items = "".join(
            f'<div class="css-{p.rank:x}q7"><a class="e1x{p.product_id % 97}" '
            f'href="{self.url}/productions/{p.product_id}/selling">'
            f"<span>{html.escape(p.name)}</span></a></div>"
            for p in self._ranked(category_id)
        )
        return f"<!DOCTYPE html><html><body><main><h1>Best</h1>{items}</main></body></html>"

    def product_html(self, product_id: int) -> str:
        p = self.products[product_id]
        name = html.escape(p.name)
        return f"<!DOCTYPE html><html><head><title>{name}</title></head><body><h1>{name}</h1></body></html>"

    def reviews_json(self, product_id: int, page: int) -> dict[str, Any]:
        product = self.products[product_id]
        reviews = self.data.reviews.get(product_id, [])
        chunk = reviews[(page - 1) * REVIEWS_PER_PAGE : page * REVIEWS_PER_PAGE]
        return {
            "count": len(reviews),
            "average_all": 4.5,
            "reviews": [
                {
                    "id": t.review_id,
                    "created_at": t.created_at,
                    "writer_id": 7000 + t.review_id % 1000,
                    "writer_nickname": f"user{t.review_id % 1000}",
                    "card": {"image_url": f"{self.image_url}/reviews/{t.photo_id}.jpg" if t.photo_id else ""},
                    "review": {"comment": "Looks just like the pictures.", "star_avg": 5},
                    "production_information": {"name": product.name, "explain": "Option: standard"},
                }
                for t in chunk
            ],
        }
