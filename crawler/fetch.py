"""HTTP fetching: bytes from allowed hosts, politely, with one retry policy; nothing is parsed here.

Each host has its own rate limit and robots.txt (crawler/polite.py). A 429 or 503 with
Retry-After pauses every request to that host for as long as it asked. A caller may pass the
check its answer must pass (a parser, the photo store): an answer that fails it in a way that
may pass is asked for again under the same policy (crawler/retry.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from core.errors import quoted
from crawler.deadline import headers_within, watched_session
from crawler.errors import CrawlError, FetchError, HttpError, RefusedURL
from crawler.polite import MAX_RETRY_AFTER_S, RateLimiter, Robots, retry_after_seconds
from crawler.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Fetcher:
    """Fetches from `allowed_hosts` only, redirects included, retrying what may pass.

    `rates` gives each host's requests per second; hosts not named get `default_rate`.
    """

    allowed_hosts: frozenset[str]
    user_agent: str
    rates: dict[str, float] = field(default_factory=dict)
    default_rate: float = 2.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    # The headers, and then the whole body, however they arrive: a page sent a byte at a time
    # never passes the read timeout, which counts the wait for each byte alone. A 50 MB photo at
    # 1 MB/s fits.
    total_timeout_s: float = 120.0
    retries: int = 4
    backoff_s: float = 0.5
    max_redirects: int = 5

    def __post_init__(self) -> None:
        self.policy = RetryPolicy(self.retries, self.backoff_s)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._limiters: dict[str, RateLimiter] = {}
        self._robots: dict[str, Robots] = {}
        self._robots_locks: dict[str, threading.Lock] = {}

    @property
    def _session(self) -> requests.Session:
        # requests' Session is not thread-safe: one per worker thread.
        session = getattr(self._local, "session", None)
        if session is None:
            session = watched_session()
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
        return session

    def limiter(self, host: str) -> RateLimiter:
        with self._lock:
            if host not in self._limiters:
                self._limiters[host] = RateLimiter(self.rates.get(host, self.default_rate))
            return self._limiters[host]

    def check_host(self, url: str, redirected: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.netloc not in self.allowed_hosts:
            raise RefusedURL(f"host not allowed: {parts.netloc or url}", url, retryable=redirected)

    def robots(self, url: str) -> Robots:
        """The rules of `url`'s host, fetched once per run (RFC 9309's reading of failures)."""
        parts = urlsplit(url)
        host = parts.netloc
        with self._lock:
            lock = self._robots_locks.setdefault(host, threading.Lock())
        with lock:
            if host not in self._robots:
                self._robots[host] = self._read_robots(f"{parts.scheme}://{host}/robots.txt")
            return self._robots[host]

    def _read_robots(self, robots_url: str) -> Robots:
        try:
            body = self.policy.run(lambda: self._get_following_redirects(robots_url, 512_000, False), self._wait)
        except FetchError as exc:
            if isinstance(exc, HttpError) and 400 <= exc.status < 500:
                return Robots.allow_all(self.user_agent)  # no rules published: all allowed
            log.warning("robots.txt unreadable (%s): nothing is fetched from that host this run", exc.reason)
            return Robots(None, self.user_agent, unreadable=exc.reason)
        return Robots(body.decode("utf-8", errors="replace"), self.user_agent)

    def get(self, url: str, max_bytes: int = 50_000_000) -> bytes:
        """Returns the body of `url`; raises a CrawlError once the retries are spent."""
        return self.fetch(url, lambda body: body, max_bytes)

    def fetch(self, url: str, read: Callable[[bytes], T], max_bytes: int = 50_000_000) -> T:
        """Returns `read(body)` of `url`, asking again while the request or `read` fails in a way that may pass."""
        return self.policy.run(lambda: read(self._get_following_redirects(url, max_bytes, True)), self._wait)

    def _wait(self, exc: CrawlError, attempt: int) -> None:
        """Before a retry: the pause the host asked for, for every request to it; else backoff."""
        if exc.retry_after is None:
            log.info("retrying %s after %s", exc.url, exc.reason)
            self.policy.sleep(exc, attempt)
            return
        if exc.retry_after > MAX_RETRY_AFTER_S:
            raise FetchError(f"{exc.reason}: asked to wait {exc.retry_after:.0f}s", exc.url) from exc
        host = urlsplit(exc.url).netloc
        self.limiter(host).pause_until(time.monotonic() + exc.retry_after)
        log.info("%s asked for a %.1fs pause", host, exc.retry_after)

    def _get_following_redirects(self, url: str, max_bytes: int, check_robots: bool) -> bytes:
        for hop in range(self.max_redirects + 1):
            self.check_host(url, redirected=hop > 0)
            if check_robots:
                rules = self.robots(url)
                if rules.unreadable:
                    raise FetchError(f"{rules.unreadable} (robots.txt)", url)
                if not rules.allowed(url):
                    raise RefusedURL("disallowed by robots.txt", url, retryable=hop > 0)
            self.limiter(urlsplit(url).netloc).acquire()
            started = time.monotonic()
            try:
                with headers_within(self.total_timeout_s) as watch:
                    try:
                        r = self._session.get(
                            url,
                            timeout=(self.connect_timeout_s, self.read_timeout_s),
                            allow_redirects=False,  # each hop's host and robots rules are checked above
                            stream=True,
                        )
                    except requests.RequestException as exc:
                        if watch.expired:  # not retried: the same server would drip the same headers again
                            raise FetchError(f"no whole headers after {self.total_timeout_s:g}s", url) from exc
                        raise
            except requests.Timeout as exc:
                raise FetchError("timeout", url, retryable=True) from exc
            except requests.ConnectionError as exc:
                raise FetchError(_connection_failure(exc), url, retryable=True) from exc
            except requests.RequestException as exc:  # a broken answer: a header urllib3 refuses, say
                raise FetchError(f"a broken answer: {quoted(exc, 120)}", url, retryable=True) from exc
            with r:
                if r.is_redirect:
                    url = urljoin(url, r.headers["Location"])
                    continue
                if r.status_code != 200:
                    wait = retry_after_seconds(r.headers.get("Retry-After")) if r.status_code in (429, 503) else None
                    raise HttpError(url, r.status_code, retry_after=wait)
                return _read_capped(r, url, max_bytes, self.total_timeout_s, started)
        raise FetchError("too many redirects", url)


def _connection_failure(exc: requests.ConnectionError) -> str:
    """ "could not connect" when nothing accepted the connection, else "connection error"."""
    cause = exc.args[0] if exc.args else None
    refused = isinstance(getattr(cause, "reason", cause), urllib3.exceptions.NewConnectionError)
    return "could not connect" if refused else "connection error"


def _declared_length(r: requests.Response, url: str) -> int | None:
    """The body's length as the answer declares it, None when it does not; a Content-Length that
    is no length (`abc`, or two that differ) is a broken answer, as HTTP/1.1 says (RFC 9112, 6.3)."""
    declared = r.headers.get("Content-Length")
    if declared is None:
        return None
    values = {v.strip() for v in declared.split(",")}  # one header sent twice reads "n, n"
    if len(values) != 1 or not (value := values.pop()).isascii() or not value.isdigit():
        raise FetchError(f"a Content-Length that is no length: {quoted(declared, 40)}", url, retryable=True)
    return int(value)


def _read_capped(r: requests.Response, url: str, max_bytes: int, total_s: float, started: float) -> bytes:
    declared = _declared_length(r, url)
    # Too large is not retried: the same answer would be fetched again, as large.
    if declared is not None and declared > max_bytes:
        raise FetchError(f"too large: {declared} bytes", url)
    chunks, size = [], 0
    try:
        # read1 returns what has arrived, so the deadline is checked between a dripped page's bytes.
        while chunk := r.raw.read1(64 * 1024, decode_content=True):
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"too large: over {max_bytes} bytes", url)
            if time.monotonic() - started > total_s:
                # Not retried either: the same server would drip the same page again.
                raise FetchError(f"not whole after {total_s:g}s ({size:,} bytes so far)", url)
            chunks.append(chunk)
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise FetchError("timeout", url, retryable=True) from exc
    except urllib3.exceptions.ProtocolError as exc:  # the connection dropped mid-body
        raise FetchError("connection error", url, retryable=True) from exc
    except urllib3.exceptions.HTTPError as exc:  # a body that does not decode as its encoding says
        raise FetchError(f"a broken answer: {quoted(exc, 120)}", url, retryable=True) from exc
    body = b"".join(chunks)
    if declared is not None and len(body) != declared:
        raise FetchError(f"truncated: {len(body)} of {declared} bytes", url, retryable=True)
    return body
