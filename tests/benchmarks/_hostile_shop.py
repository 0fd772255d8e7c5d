"""A shop that speaks Ohouse's shapes with a hostile answer on each product: what a stranger's
server can send a crawler. Category 1 lists the hostile products; category 2, read after it,
holds one plain product, which a crawl that went on reaches.

Products of category 1 and what their reviews page sends:
  10  listed twice; a good review and one whose card is a string
  11  a ranking item whose review_count is "abc"
  12  JSON nested 200,000 deep
  13  Content-Length: abc
  14  503 with Retry-After: ² (a superscript two: a digit to str.isdigit, none to int)
  15  the page a byte at a time
  16  a page of 6 MB, over the crawler's page budget
  17  the status line and headers a byte at a time
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from tests.procs import http_server

HOSTILE = {"10": "twice, a bad review", "11": "review_count abc", "12": "nested", "13": "length abc",
           "14": "retry-after", "15": "drip", "16": "oversize", "17": "header drip"}  # fmt: skip
asked: Counter[str] = Counter()  # review pages asked, by product


def _review(n: int, host: str) -> dict[str, object]:
    return {"id": n, "created_at": "2026-01-01", "card": {"image_url": f"http://{host}/photos/{n}.png"},
            "production_information": {"name": f"Product of review {n}"}}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        host = self.headers["Host"]
        if url.path == "/commerces/ranks.json":
            products: list[object] = []
            if query.get("page") == "1" and query["category"] == "1":
                products = [{"id": 10, "review_count": 2}, {"id": 10, "review_count": 2},
                            {"id": 11, "review_count": "abc"}]  # fmt: skip
                products += [{"id": int(p), "review_count": 1} for p in ("12", "13", "14", "15", "16", "17")]
            elif query.get("page") == "1" and query["category"] == "2":
                products = [{"id": 20, "review_count": 1}]
            return self._json({"products": products})
        if url.path == "/production_reviews.json":
            product = query["production_id"]
            if query.get("page") != "1":
                return self._json({"reviews": []})
            asked[product] += 1
            return self._reviews(product, host)
        if url.path.startswith("/photos/"):
            out = io.BytesIO()
            Image.new("RGB", (80, 60), (int(Path(url.path).stem) % 256, 90, 160)).save(out, "PNG")
            return self._send(200, out.getvalue(), "image/png")
        self._send(404, b"", "text/plain")

    def _reviews(self, product: str, host: str) -> None:
        if product == "10":
            return self._json({"reviews": [_review(100, host), {"id": 101, "card": "a string"}]})
        if product == "12":
            return self._send(200, b"[" * 200_000 + b"]" * 200_000, "application/json")
        if product == "13":
            return self._raw(b"HTTP/1.0 200 OK\r\nContent-Length: abc\r\n\r\n{}")
        if product == "14":
            return self._raw(b"HTTP/1.0 503 Busy\r\nRetry-After: \xc2\xb2\r\nContent-Length: 0\r\n\r\n")
        if product == "15":
            body = json.dumps({"reviews": [_review(150, host)]}).encode()
            self.wfile.write(f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            return self._drip(body)
        if product == "16":
            return self._send(200, b" " * 6_000_000 + b'{"reviews": []}', "application/json")
        if product == "17":
            return self._drip(b"HTTP/1.0 200 OK\r\nX-Slow: " + b"x" * 100 + b"\r\nContent-Length: 2\r\n\r\n{}")
        return self._json({"reviews": [_review(int(product) * 10, host)]})

    def _json(self, body: object) -> None:
        self._send(200, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the crawler stopped reading at its budget, as it should
            self.wfile.write(body)

    def _raw(self, answer: bytes) -> None:
        self.wfile.write(answer)

    def _drip(self, answer: bytes) -> None:
        """`answer` a byte every half second: each well within the crawler's read timeout."""
        for byte in answer:
            time.sleep(0.5)
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:  # the crawler gave up, as it should
                return

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def hostile_shop() -> Iterator[str]:
    """Serves the shop on loopback; yields its host:port."""
    with http_server(_Handler) as host:
        yield host
