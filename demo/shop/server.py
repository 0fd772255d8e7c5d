"""HTTP servers for the demo shop: one for pages and JSON, one for photos, as the real shop has.

Paths and JSON shapes follow ../shared/docs/ohouse.md, so the crawler's Ohouse adapter reads both.
"""

from __future__ import annotations

import html
import json
import logging
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from demo.shop.faults import FaultPlan, bomb_png
from demo.shop.generate import PhotoTruth, Product, load_catalog
from reviewlens.processes import note

log = logging.getLogger(__name__)

REVIEWS_PER_PAGE = 5  # as last observed on the real shop
ROBOTS = "User-agent: *\nDisallow: /private/\n"


@dataclass
class ShopData:
    products: list[Product]
    reviews: dict[int, list[PhotoTruth]]  # product id -> reviews, newest first
    photos_dir: Path
    catalog_dir: Path  # the shop's own photo of each product, where it was generated

    @classmethod
    def load(cls, out_dir: Path) -> ShopData:
        rows = json.loads((out_dir / "truth.json").read_text())
        reviews: dict[int, list[PhotoTruth]] = defaultdict(list)
        for r in rows:
            t = PhotoTruth(**{**r, "bbox": tuple(r["bbox"])})
            reviews[t.product_id].append(t)
        for items in reviews.values():
            items.sort(key=lambda t: t.created_at, reverse=True)
        return cls(load_catalog(out_dir), dict(reviews), out_dir / "photos", out_dir / "catalog")


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: _ShopServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        plan = self.server.shop.faults
        # robots.txt is never faulted: a crawler's reading of it is tested on its own.
        fault = plan.pick(self.server.target) if plan and url.path != "/robots.txt" else None
        self.server.shop.record(self.server.base_url, self.path, self.headers.get("User-Agent", ""), fault)
        try:
            response = self.server.route(url.path, query)
        except (KeyError, ValueError) as exc:
            response = Response(400, "application/json", json.dumps({"error": str(exc)}).encode())
        try:
            if plan and plan.latency_s:
                time.sleep(plan.latency_s)
            self.send(apply_fault(fault, response, self, plan) if fault and plan else response)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a stall does that): nothing more to send

    def send(self, r: Response | None, length: int | None = None) -> None:
        if r is None:
            return
        self.send_response(r.status)
        self.send_header("Content-Type", r.content_type)
        self.send_header("Content-Length", str(len(r.body) if length is None else length))
        for k, v in r.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(r.body)


def apply_fault(fault: str, r: Response, h: _Handler, plan: FaultPlan) -> Response | None:
    """Turns the right response into the faulty one; None when the handler already answered."""
    shop = h.server.shop
    if fault == "5xx":
        return Response(503, "text/html", b"<html>upstream error</html>")
    if fault == "429":
        return Response(429, "text/html", b"<html>slow down</html>", {"Retry-After": str(plan.retry_after_s)})
    if fault == "slow":
        time.sleep(plan.slow_s)
        return r
    if fault == "stall":
        time.sleep(plan.stall_s)
        return r
    if fault == "truncate":
        h.close_connection = True
        h.send(Response(r.status, r.content_type, r.body[: len(r.body) // 2]), length=len(r.body))
        return None
    if fault == "content_type":
        return Response(200, r.content_type, b"<html><body>Service temporarily unavailable</body></html>")
    if fault == "drift":
        body = r.body.replace(b'"reviews"', b'"review_items"').replace(b'"products"', b'"items"')
        return Response(r.status, r.content_type, body.replace(b"/productions/", b"/goods/"))
    if fault == "redirect":
        # Half to a host nobody allowed, half to a path robots.txt disallows.
        target = (
            f"{shop.foreign_url}{h.path}" if zlib.crc32(h.path.encode()) % 2 else f"{h.server.base_url}/private{h.path}"
        )
        return Response(302, "text/html", b"", {"Location": target})
    if fault == "oversize":
        return Response(r.status, r.content_type, r.body + b"\0" * max(0, plan.oversize_bytes - len(r.body)))
    if fault == "bomb":
        return Response(200, "image/png", bomb_png())
    raise ValueError(f"unknown fault {fault}")


class _ShopServer(ThreadingHTTPServer):
    daemon_threads = True
    target = "page"  # what faults may hit: 'page' or 'image'

    def __init__(self, host: str, port: int, shop: DemoShop) -> None:
        super().__init__((host, port), _Handler)
        self.shop = shop

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, path: str, q: dict[str, str]) -> Response:
        if path == "/robots.txt":
            return Response(200, "text/plain", ROBOTS.encode())
        return Response(404, "text/plain", b"not found")


class _ApiServer(_ShopServer):
    def route(self, path: str, q: dict[str, str]) -> Response:
        shop = self.shop
        if path == "/ranks":
            return Response(200, "text/html; charset=utf-8", shop.ranking_html(int(q["category_id"])).encode())
        if path == "/commerces/ranks.json":
            body = shop.ranking_json(int(q["category"]), int(q.get("page", 1)), int(q.get("per", 20)))
            return Response(200, "application/json", json.dumps(body).encode())
        if path == "/production_reviews.json":
            body = shop.reviews_json(int(q["production_id"]), int(q.get("page", 1)))
            return Response(200, "application/json", json.dumps(body).encode())
        if path.startswith("/productions/") and path.endswith("/selling"):
            return Response(200, "text/html; charset=utf-8", shop.product_html(int(path.split("/")[2])).encode())
        return super().route(path, q)


class _ImageServer(_ShopServer):
    target = "image"

    def route(self, path: str, q: dict[str, str]) -> Response:
        name = path.rsplit("/", 1)[-1]
        # Only names the generator wrote are served: no path from the URL reaches the disk.
        if path.startswith("/reviews/") and name in self.shop.photo_names:
            return Response(200, "image/jpeg", (self.shop.data.photos_dir / name).read_bytes())
        if path.startswith("/catalog/") and name in self.shop.catalog_names:
            return Response(200, "image/jpeg", (self.shop.data.catalog_dir / name).read_bytes())
        return super().route(path, q)


class _ForeignServer(_ShopServer):
    """A host that is not the shop's: faulty redirects point here; a polite crawler never comes."""

    def route(self, path: str, q: dict[str, str]) -> Response:
        return Response(200, "image/jpeg", b"not the shop's photo")


class DemoShop:
    """The demo shop's two servers over one generated catalog; `start()` serves in threads."""

    def __init__(
        self,
        out_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        image_port: int = 0,
        request_log: Path | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        self.data = ShopData.load(Path(out_dir))
        self.photo_names = {f"{t.photo_id}.jpg" for items in self.data.reviews.values() for t in items if t.photo_id}
        catalog = self.data.catalog_dir
        self.catalog_names = {f.name for f in catalog.glob("*.jpg")} if catalog.is_dir() else set()
        self.products = {p.product_id: p for p in self.data.products}
        self._api = _ApiServer(host, port, self)
        self._images = _ImageServer(host, image_port, self)
        self._foreign = _ForeignServer(host, 0, self)
        self.faults = faults
        self._log_lock = threading.Lock()
        self._request_log = open(request_log, "a", encoding="utf-8") if request_log else None  # noqa: SIM115
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return self._api.base_url

    @property
    def image_url(self) -> str:
        return self._images.base_url

    @property
    def foreign_url(self) -> str:
        return self._foreign.base_url

    def crawl_settings(self) -> dict[str, Any]:
        """The crawl settings that point the Ohouse adapter at this shop (JSON-ready)."""
        return {
            "shop_url": self.url,
            "ranking_url": self.url,
            "image_hosts": [urlsplit(self.image_url).netloc],
            "categories": sorted({p.category_id for p in self.data.products}),
        }

    def record(self, base: str, path: str, user_agent: str, fault: str | None) -> None:
        """Appends one request to the request log, for tests that check the crawler's manners."""
        if self._request_log is None:
            return
        entry = {"t": datetime.now(UTC).timestamp(), "host": base, "path": path, "ua": user_agent, "fault": fault}
        line = json.dumps(entry)
        with self._log_lock:
            self._request_log.write(line + "\n")
            self._request_log.flush()

    def start(self) -> DemoShop:
        for server in (self._api, self._images, self._foreign):
            t = threading.Thread(target=server.serve_forever, name=f"demo-shop {server.base_url}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for server in (self._api, self._images, self._foreign):
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
        photo = f"{product_id}.jpg"
        # Shop pages name their product's photo for sharing (Open Graph); only when there is one.
        og = ""
        if photo in self.catalog_names:
            og = f'<meta property="og:image" content="{self.image_url}/catalog/{photo}">'
        return f"<!DOCTYPE html><html><head><title>{name}</title>{og}</head><body><h1>{name}</h1></body></html>"

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


def serve_in_background(shop_dir: Path, port: int, image_port: int) -> int:
    """Serves a generated shop from a process of its own session, so it outlives the command
    that started it (the demo's answers link to its product pages); returns the process id,
    noted in the shop folder's pid file for `reviewlens-demo stop`."""
    log = open(Path(shop_dir) / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.shop.server", str(shop_dir), str(port), str(image_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    note(pid_file(shop_dir), proc.pid)
    return proc.pid


def pid_file(shop_dir: Path) -> Path:
    return Path(shop_dir) / "server.pid"


if __name__ == "__main__":  # python -m demo.shop.server SHOP_DIR PORT IMAGE_PORT
    with DemoShop(Path(sys.argv[1]), port=int(sys.argv[2]), image_port=int(sys.argv[3])):
        threading.Event().wait()
