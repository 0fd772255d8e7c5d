"""HTTP fetching: bytes from allowed hosts, with timeouts and retries; nothing is parsed here."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


class FetchError(Exception):
    """A URL could not be fetched; `reason` is a short code stored in the manifest."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass
class Fetcher:
    """Fetches from `allowed_hosts` only, redirects included, retrying transient failures."""

    allowed_hosts: frozenset[str]
    user_agent: str
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    retries: int = 4
    backoff_s: float = 0.5
    max_redirects: int = 5

    def __post_init__(self) -> None:
        self._local = threading.local()

    @property
    def _session(self) -> requests.Session:
        # requests' Session is not thread-safe: one per worker thread.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
        return session

    def check_host(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.netloc not in self.allowed_hosts:
            raise FetchError(url, f"host not allowed: {parts.netloc or url}")

    def get(self, url: str, max_bytes: int = 50_000_000) -> tuple[bytes, str]:
        """Returns the body and Content-Type of `url`; raises FetchError once retries are spent."""
        for attempt in range(self.retries + 1):
            try:
                return self._get_following_redirects(url, max_bytes)
            except FetchError as exc:
                if not _transient(exc.reason) or attempt == self.retries:
                    raise
                delay = self.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
                log.info("retrying %s in %.1fs after %s", url, delay, exc.reason)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _get_following_redirects(self, url: str, max_bytes: int) -> tuple[bytes, str]:
        for _ in range(self.max_redirects + 1):
            self.check_host(url)
            try:
                r = self._session.get(
                    url,
                    timeout=(self.connect_timeout_s, self.read_timeout_s),
                    allow_redirects=False,  # each hop's host is checked above
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
                    raise FetchError(url, f"http {r.status_code}")
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
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise FetchError(url, "connection error") from exc
    body = b"".join(chunks)
    if declared is not None and len(body) != int(declared):
        raise FetchError(url, f"truncated: {len(body)} of {declared} bytes")
    return body


def _transient(reason: str) -> bool:
    if reason in ("timeout", "connection error") or reason.startswith("truncated"):
        return True
    return reason.startswith("http ") and int(reason.split()[1]) in RETRY_STATUSES
