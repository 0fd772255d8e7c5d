"""A proxy in front of a real Label Studio that kills it at a chosen request.

Requests pass through unchanged until one matches the trigger; then the server's whole process
group is killed (SIGKILL, as the kernel's out-of-memory killer or a pulled plug would) and that
request's connection is dropped, so the caller meets a dead server at a known point of its work.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

from reviewlens.labelstudio_server import LabelStudioServer

# The hop-by-hop headers a proxy must not pass on (RFC 9110, 7.6.1), and the length it recomputes.
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length", "host"}


@contextmanager
def killer_proxy(server: LabelStudioServer, trigger: Callable[[str, str, int], bool]) -> Iterator[str]:
    """Yields the proxy's URL. `trigger(method, path, n)` sees each request (n counts the requests
    that matched nothing so far) and says whether to kill the server there."""
    seen = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                kill = trigger(self.command, self.path, seen["n"])
                seen["n"] += 1
                if kill:
                    pid = server.pid()
                    if pid is not None:
                        os.killpg(pid, signal.SIGKILL)
            if kill:
                self.close_connection = True
                return  # no answer at all: the connection closes, as a dead server's does
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            try:
                answer = requests.request(self.command, server.url + self.path, headers=headers, data=body, timeout=120)
            except requests.RequestException:
                self.close_connection = True
                return
            self.send_response(answer.status_code)
            for k, v in answer.headers.items():
                if k.lower() not in HOP and k.lower() != "content-encoding":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()


def nth(n: int, method: str, path: str, **params: str) -> Callable[[str, str, int], bool]:
    """A trigger that fires at the `n`th request (from 1) of `method` to `path` with these query values."""
    matched = [0]

    def trigger(m: str, target: str, _: int) -> bool:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if m == method and url.path.rstrip("/") == path and all(query.get(k) == v for k, v in params.items()):
            matched[0] += 1
            return matched[0] == n
        return False

    return trigger
