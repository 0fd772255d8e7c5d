"""The doors every listening service stands behind (core/doors.py), held shut for real: a
uvicorn server on loopback, spoken to over sockets and HTTP as a stranger would."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import requests
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.bodies import Refused, read_body
from core.doors import HeadersInTime, Queue, guarded, own_hosts
from tests.procs import free_port

LOGIN = "reviewlens:a-secret-of-the-test"


class QuickHeaders(HeadersInTime):
    deadline_s = 1.0


@contextmanager
def door_server(queue: int = 1, login: str | None = LOGIN) -> Iterator[tuple[str, threading.Event]]:
    """A guarded app whose /work holds each request until the yielded event is set."""
    release = threading.Event()
    waiting = Queue(queue)

    async def work(request: Request) -> Response:
        try:
            async with waiting.place():
                body = await read_body(request, 1000)
                while not release.is_set():
                    await asyncio.sleep(0.05)
        except Refused as refused:
            return refused.response()
        return JSONResponse({"read": len(body)})

    port = free_port()
    app = guarded([Route("/work", work, methods=["POST"])], own_hosts("127.0.0.1"), login)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=QuickHeaders, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", release
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=10)


def test_a_stranger_without_the_login_or_with_a_foreign_host_gets_nothing() -> None:
    user, _, password = LOGIN.partition(":")
    with door_server() as (url, release):
        release.set()
        assert requests.post(f"{url}/work", data=b"x", auth=(user, password), timeout=10).json() == {"read": 1}
        for forged in ({}, {"auth": (user, "guess")}, {"headers": {"Authorization": "Bearer " + password}}):
            refused = requests.post(f"{url}/work", data=b"x", timeout=10, **forged)  # type: ignore[arg-type]
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        # A page whose own domain resolves to 127.0.0.1 (DNS rebinding) sends its own name as Host.
        rebound = requests.post(f"{url}/work", data=b"x", auth=(user, password),
                                headers={"Host": "attacker.example"}, timeout=10)  # fmt: skip
        assert rebound.status_code == 400
        for own in ("localhost", "127.0.0.1"):
            port = url.rsplit(":", 1)[1]
            headers = {"Host": f"{own}:{port}"}
            assert requests.post(f"{url}/work", data=b"x", auth=(user, password), headers=headers, timeout=10).ok


def test_the_names_a_service_answers_to() -> None:
    assert own_hosts("127.0.0.1") == ["127.0.0.1", "localhost"]
    assert own_hosts("localhost", ["shop.example"]) == ["127.0.0.1", "localhost", "shop.example"]
    assert own_hosts("0.0.0.0", ["shop.example"]) == ["0.0.0.0", "shop.example"]


def test_past_the_queue_a_request_is_refused_at_once_with_retry_after() -> None:
    """One request answered and one waiting; the third is refused 503 before its body is read."""
    with door_server(queue=1, login=None) as (url, release), ThreadPoolExecutor(2) as pool:
        held = [pool.submit(requests.post, f"{url}/work", data=b"held", timeout=30) for _ in range(2)]
        time.sleep(1.0)  # both are inside
        refused = requests.post(f"{url}/work", data=b"x" * 500, timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
        assert "busy" in refused.json()["error"]
        release.set()
        assert [f.result().json() for f in held] == [{"read": 4}, {"read": 4}]
        assert requests.post(f"{url}/work", data=b"x", timeout=10).json() == {"read": 1}  # the queue is free again


@pytest.mark.parametrize("sent", [b"", b"POST /work HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
def test_a_connection_that_never_finishes_its_headers_is_closed(sent: bytes) -> None:
    """Slowloris: a client that opens connections and sends its headers a byte at a time, or never."""
    with door_server(login=None) as (url, release):
        release.set()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(sent)
            assert sock.recv(100) == b""  # closed by the server, not answered
        # After an answer, a kept-alive connection gets the same deadline for its next request.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /work HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nx")
            first = b""
            while not first.endswith(b'{"read":1}'):
                first += sock.recv(1000)
            assert first.startswith(b"HTTP/1.1 200")
            sock.sendall(sent)
            assert sock.recv(100) == b""
