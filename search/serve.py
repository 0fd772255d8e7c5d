"""`reviewlens serve`: the page a shopper uses. Drop a photo, see each product found in it.

A Starlette app (the web stack Prefect already installs) run by uvicorn, behind the doors of
core/doors.py (its own Host names, a bounded queue, header and body deadlines). It is the
shop's public page, so it asks no login: it is meant to sit behind the shop's web server. The
models and the index are loaded once; each photo is answered in a worker thread, one at a time,
so a slow answer never blocks the page and two answers never share the network at once.
Anything wrong with an upload (empty, too large, not an image, a decompression bomb) is a 400 or
413 with the reason, and never stops the server.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from core.bodies import Refused, read_body
from core.doors import Queue, guarded, own_hosts, run
from core.images import UPLOAD
from core.layout import Layout
from search.answers import PhotoAnswer, as_json
from search.finder import Finder
from training.data import UnreadablePhoto, decode_image

MAX_UPLOAD = 25_000_000  # bytes: a phone's largest photos are well under this
PAGE = (Path(__file__).parent / "page.html").read_text()


def build_app(layout: Layout, finder: Finder, hosts: list[str], queue: int = 16) -> Starlette:
    lock = threading.Lock()
    waiting = Queue(queue)

    def answer(data: bytes) -> dict[str, Any]:
        # Decoded under the lock too: however many uploads arrive at once, one image is held decoded.
        with lock:
            image = decode_image(io.BytesIO(data), "the photo", UPLOAD)
            (answer,) = finder.answer([image])
        return {**as_json(PhotoAnswer(Path("upload"), answer.objects)), "photo": None}

    async def page(_: Request) -> Response:
        return HTMLResponse(PAGE)

    async def health(_: Request) -> Response:
        index = finder.index
        return JSONResponse(
            {"model": finder.ensemble.version, "products": len(finder.products), "photos": len(index) if index else 0}
        )

    async def find(request: Request) -> Response:
        try:
            async with waiting.place():  # before the body: a crowd waits without its photos in memory
                data = await read_body(request, MAX_UPLOAD, "the photo")
                if not data:
                    return _refuse(400, "no photo was sent")
                result = await run_in_threadpool(answer, data)
        except Refused as refused:
            return refused.response()
        except UnreadablePhoto as exc:
            return _refuse(400, str(exc))
        return JSONResponse(result)

    async def product_photo(request: Request) -> Response:
        product = next((p for p in finder.products if p.product_id == request.path_params["product_id"]), None)
        if product is None or not product.photo:
            return _refuse(404, "no photo of that product")
        path = (layout.store_dir / product.photo).resolve()
        if not path.is_relative_to(layout.store_dir.resolve()) or not path.is_file():
            return _refuse(404, "no photo of that product")
        return FileResponse(path)

    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/api/find", find, methods=["POST"]),
        Route("/products/{product_id}/photo", product_photo),
    ]
    return guarded(routes, hosts)


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def serve(layout: Layout, finder: Finder, host: str, port: int, allowed_hosts: list[str], queue: int) -> None:
    hosts = own_hosts(host, allowed_hosts)
    print(f"reviewlens serve: http://{host}:{port}/ (model {finder.ensemble.version}, {len(finder.products)} products; "
          f"answers requests for {', '.join(hosts)}; {queue} may wait)")  # fmt: skip
    run(build_app(layout, finder, hosts, queue), host, port)
