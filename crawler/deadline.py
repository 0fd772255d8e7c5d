"""A deadline on an answer's headers. The read timeout counts the wait for each byte alone, so a
server that sends its status line and headers a byte every few seconds would hold a crawl
forever; urllib3 has no whole-answer timeout. A timer shuts the request's socket once the
deadline passes, which ends the blocked read at once; the body's own deadline is checked as it
is read (crawler/fetch.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

_current = threading.local()  # the watch of the request this thread is making


class Watch:
    """One request's deadline: `expired` once the timer shut its connection."""

    def __init__(self) -> None:
        self.conn: Any = None  # the urllib3 connection the request went out on
        self.expired = False
        self._lock = threading.Lock()

    def shut(self) -> None:
        with self._lock:
            sock = getattr(self.conn, "sock", None)
            if sock is not None:
                self.expired = True
                with contextlib.suppress(OSError):  # closed already: the answer came after all
                    sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """A pool that tells the thread's watch which connection its request went out on."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.conn = conn
        return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]


class _WatchedPool(_Watched, urllib3.HTTPConnectionPool):
    pass


class _WatchedTLSPool(_Watched, urllib3.HTTPSConnectionPool):
    pass


class WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections a Watch can shut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedTLSPool}


def watched_session() -> requests.Session:
    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, WatchedAdapter())
    return session


@contextmanager
def headers_within(seconds: float) -> Iterator[Watch]:
    """Requests this thread makes inside the block have `seconds` to get their headers."""
    watch = Watch()
    timer = threading.Timer(seconds, watch.shut)
    timer.daemon = True
    _current.watch = watch
    timer.start()
    try:
        yield watch
    finally:
        timer.cancel()
        _current.watch = None
