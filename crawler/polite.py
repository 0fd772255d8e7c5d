"""Manners toward a host: its robots.txt, a request rate it never sees exceeded, and its pauses.

One RateLimiter and one Robots per host are shared by every thread that fetches from it
(crawler/fetch.py keeps them).
"""

from __future__ import annotations

import collections
import threading
import time
import urllib.robotparser
from email.utils import parsedate_to_datetime

from core.errors import ConfigError

# A host that asks for a pause longer than this is treated as down for this run.
MAX_RETRY_AFTER_S = 300.0
# Windows are measured with a margin: the host's clock sees requests a little later and
# closer together than this machine sent them.
WINDOW_S = 1.05


class RateLimiter:
    """At most `rate` request starts in any window of one second, evenly spaced.

    `pause_until` stops every request to the host until a time the host asked for.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ConfigError(f"a request rate must be positive, got {rate}")
        self.rate = rate
        self._lock = threading.Lock()
        self._starts: collections.deque[float] = collections.deque()
        self._next = 0.0
        self._paused_until = 0.0

    def pause_until(self, when: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, when)

    def acquire(self) -> None:
        """Blocks until a request may start, then counts it as started."""
        capacity = max(1, int(self.rate))
        while True:
            with self._lock:
                now = time.monotonic()
                while self._starts and now - self._starts[0] >= WINDOW_S:
                    self._starts.popleft()
                ready = max(self._next, self._paused_until)
                if len(self._starts) >= capacity:
                    ready = max(ready, self._starts[0] + WINDOW_S)
                if now >= ready:
                    self._starts.append(now)
                    self._next = now + 1.0 / self.rate
                    return
                wait = ready - now
            time.sleep(wait)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():  # str.isdigit also takes "²" and other digits int() refuses
        return float(value) if value.isascii() else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Robots:
    """A host's robots.txt rules, read once; unreadable rules mean nothing may be fetched."""

    def __init__(self, text: str | None, user_agent: str, unreadable: str = "") -> None:
        self.user_agent = user_agent
        self.unreadable = unreadable  # why the rules could not be read, when they could not
        self._parser: urllib.robotparser.RobotFileParser | None = None
        if text is not None:
            self._parser = urllib.robotparser.RobotFileParser()
            self._parser.parse(text.splitlines())

    @classmethod
    def allow_all(cls, user_agent: str) -> Robots:
        return cls("", user_agent)

    def allowed(self, url: str) -> bool:
        return self._parser is not None and self._parser.can_fetch(self.user_agent, url)
