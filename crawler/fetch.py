"""HTTP fetching: bytes from allowed hosts, politely and with retries; nothing is parsed here.

Each host has its own rate limit and robots.txt (crawler/polite.py). A 429 or 503 with
Retry-After pauses every request to that host for as long as it asked.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests

from crawler.polite import MAX_RETRY_AFTER_S, RateLimiter, Robots, retry_after_seconds

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


class FetchError(Exception):
    """A URL could not be fetched; `reason` is a short code stored in the manifest."""

    def __init__(self, url: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Fetcher:
    """Fetches from `allowed_hosts` only, redirects included, retrying transient failures.

    `rates` gives each host's requests per second; hosts not named get `default_rate`.
    """

    allowed_hosts: frozenset[str]
    user_agent: str
    rates: dict[str, float] = field(default_factory=dict)
    default_rate: float = 2.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    retries: int = 4
    backoff_s: float = 0.5
    max_redirects: int = 5
    obey_robots: bool = True

    def __post_init__(self) -> None:
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
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
        return session

    def limiter(self, host: str) -> RateLimiter:
        with self._lock:
            if host not in self._limiters:
                self._limiters[host] = RateLimiter(self.rates.get(host, self.default_rate))
            return self._limiters[host]

    def check_host(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.netloc not in self.allowed_hosts:
            raise FetchError(url, f"host not allowed: {parts.netloc or url}")

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
            body, _ = self._get_with_retries(robots_url, 512_000, check_robots=False)
        except FetchError as exc:
            if exc.reason.startswith("http 4"):
                return Robots.allow_all(self.user_agent)  # no rules published: all allowed
            log.warning("robots.txt unreadable (%s): nothing is fetched from that host this run", exc.reason)
            return Robots(None, self.user_agent)
        return Robots(body.decode("utf-8", errors="replace"), self.user_agent)

    def get(self, url: str, max_bytes: int = 50_000_000) -> tuple[bytes, str]:
        """Returns the body and Content-Type of `url`; raises FetchError once retries are spent."""
        return self._get_with_retries(url, max_bytes, check_robots=self.obey_robots)

    def _get_with_retries(self, url: str, max_bytes: int, check_robots: bool) -> tuple[bytes, str]:
        for attempt in range(self.retries + 1):
            try:
                return self._get_following_redirects(url, max_bytes, check_robots)
            except FetchError as exc:
                if not transient(exc.reason) or attempt == self.retries:
                    raise
                if exc.retry_after is not None:
                    if exc.retry_after > MAX_RETRY_AFTER_S:
                        raise FetchError(url, f"{exc.reason}: asked to wait {exc.retry_after:.0f}s") from exc
                    # The host asked for a pause: every request to it waits, not only this one.
                    self.limiter(urlsplit(exc.url).netloc).pause_until(time.monotonic() + exc.retry_after)
                    log.info("%s asked for a %.1fs pause", urlsplit(exc.url).netloc, exc.retry_after)
                    continue
                delay = self.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
                log.info("retrying %s in %.1fs after %s", url, delay, exc.reason)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _get_following_redirects(self, url: str, max_bytes: int, check_robots: bool) -> tuple[bytes, str]:
        for _ in range(self.max_redirects + 1):
            self.check_host(url)
            if check_robots and not self.robots(url).allowed(url):
                raise FetchError(url, "disallowed by robots.txt")
            self.limiter(urlsplit(url).netloc).acquire()
            try:
                r = self._session.get(
                    url,
                    timeout=(self.connect_timeout_s, self.read_timeout_s),
                    allow_redirects=False,  # each hop's host and robots rules are checked above
                    stream=True,
                )
            except requests.Timeout as exc:
                raise FetchError(url, "timeout") from exc
            except requests.ConnectionError as exc:
                raise FetchError(url, "connection error") from exc
            with r:
                if r.is_redirect:
                    url = urljoin(url, r.headers["Location"])
                    continue
                if r.status_code != 200:
                    wait = retry_after_seconds(r.headers.get("Retry-After")) if r.status_code in (429, 503) else None
                    raise FetchError(url, f"http {r.status_code}", retry_after=wait)
                return _read_capped(r, url, max_bytes), r.headers.get("Content-Type", "")
        raise FetchError(url, "too many redirects")


def _read_capped(r: requests.Response, url: str, max_bytes: int) -> bytes:
    declared = r.headers.get("Content-Length")
    if declared is not None and int(declared) > max_bytes:
        raise FetchError(url, f"too large: {declared} bytes")
    chunks, size = [], 0
    try:
        for chunk in r.iter_content(64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(url, f"too large: over {max_bytes} bytes")
            chunks.append(chunk)
    except requests.Timeout as exc:
        raise FetchError(url, "timeout") from exc
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise FetchError(url, "connection error") from exc
    body = b"".join(chunks)
    if declared is not None and len(body) != int(declared):
        raise FetchError(url, f"truncated: {len(body)} of {declared} bytes")
    return body


def transient(reason: str) -> bool:
    """Whether a failure may pass if the same request is made again."""
    if reason in ("timeout", "connection error") or reason.startswith("truncated"):
        return True
    return reason.startswith("http ") and int(reason.split()[1]) in RETRY_STATUSES
