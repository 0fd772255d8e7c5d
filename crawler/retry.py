"""The crawler's one retry policy: how often, and how far apart, a failed step is tried again."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from crawler.errors import CrawlError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `retries` more tries of a step whose CrawlError is retryable, backing off exponentially.

    Jitter (0.5x to 1.5x) keeps parallel workers that failed together from retrying together.
    """

    retries: int = 4
    backoff_s: float = 0.5

    def delay(self, attempt: int) -> float:
        return self.backoff_s * 2**attempt * random.uniform(0.5, 1.5)

    def sleep(self, exc: CrawlError, attempt: int) -> None:
        time.sleep(self.delay(attempt))

    def run(self, step: Callable[[], T], wait: Callable[[CrawlError, int], None] | None = None) -> T:
        """Returns `step()`, trying again after `wait(error, attempt)` (default: backoff) while it may pass."""
        for attempt in range(self.retries + 1):
            try:
                return step()
            except CrawlError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                (wait or self.sleep)(exc, attempt)
        raise AssertionError("unreachable")
