"""What stands in front of every service that listens (`serve`, `ml-backend`): who may come in,
how many may wait, and how long a client may take to say what it wants.

- **Host.** A request whose Host header is not one of the service's own names is refused (400):
  a page that points its own domain at 127.0.0.1 (DNS rebinding) cannot reach the service.
- **Login.** A service given a login ('user:secret') answers 401 to a request without it.
- **Queue.** The models answer one request at a time; at most `queue` more wait. Past that a
  request is answered 503 with Retry-After before its body is read, so a crowd costs no memory.
- **Deadlines.** A connection must finish its request line and headers within HEADER_DEADLINE_S
  of opening (or of its last answer); its body then has bodies.BODY_DEADLINE_S.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.bodies import Refused
from core.kept_secret import basic_header

# Headers are a few hundred bytes; a client that has not sent them in this long is holding the
# connection open (slowloris), not sending a request.
HEADER_DEADLINE_S = 10.0
# Connections held at once, waiting or working; uvicorn answers 503 past it.
MAX_CONNECTIONS = 200
RETRY_AFTER_S = 5
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def own_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The names a request may give in its Host header: the address bound, loopback's names when
    bound there, and the names a web server in front forwards (`--allowed-host`)."""
    names = {host, *extra}
    return sorted(names | set(LOOPBACK_NAMES) if host in LOOPBACK_NAMES else names)


class Queue:
    """Admits at most `1 + waiting` requests at once; the others are refused with 503 and Retry-After."""

    def __init__(self, waiting: int) -> None:
        self.limit = 1 + waiting
        self.inside = 0

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        # One event loop: the check and the count cannot interleave with another request's.
        if self.inside >= self.limit:
            raise Refused(503, f"busy: {self.inside} requests are being answered or waiting; ask again shortly",
                          headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        self.inside += 1
        try:
            yield
        finally:
            self.inside -= 1


class RequireLogin:
    """Refuses (401) every request without HTTP basic auth matching `login` ('user:secret')."""

    def __init__(self, app: ASGIApp, login: str) -> None:
        self.app = app
        self.expected = basic_header(login).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                refusal = JSONResponse({"error": "a login is required"}, status_code=401,
                                       headers={"WWW-Authenticate": 'Basic realm="reviewlens"'})  # fmt: skip
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guarded(routes: list[Any], hosts: list[str], login: str | None = None) -> Starlette:
    """A Starlette app of `routes` behind the Host check and, when given, the login."""
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)]
    if login is not None:
        middleware.append(Middleware(RequireLogin, login=login))
    return Starlette(routes=routes, middleware=middleware)


class HeadersInTime(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request line and headers are not
    all in HEADER_DEADLINE_S after it opened or after its last answer. uvicorn's own keep-alive
    timeout starts only after a first answer, and stops at the first byte of the next request."""

    deadline_s = HEADER_DEADLINE_S
    _late: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self._late is not None:  # the headers are in: a request began
            self._late.cancel()
            self._late = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is None or self.cycle.response_complete:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._late is not None:
            self._late.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._late is not None:
            self._late.cancel()
        self._late = self.loop.call_later(self.deadline_s, self._too_slow)

    def _too_slow(self) -> None:
        self._late = None
        between_requests = self.cycle is None or self.cycle.response_complete
        if between_requests and not self.transport.is_closing():
            self.transport.close()


def run(app: ASGIApp, host: str, port: int) -> None:
    uvicorn.run(app, host=host, port=port, log_level="warning", http=HeadersInTime,
                limit_concurrency=MAX_CONNECTIONS)  # fmt: skip
