"""What can go wrong in a crawl, as types: each knows whether asking again may help.

`reason` is the short text stored with a failed photo in the manifest; its first word (up to a
colon) is what the crawl summary counts.
"""

from __future__ import annotations

from core.errors import ReviewlensError


class CrawlError(ReviewlensError):
    """A page or photo the crawl could not use.

    `retryable`: the same request may pass if made again soon (a timeout, a 503, or an edge
    server's passing glitch such as an error page served as a photo).
    """

    retryable = False
    retry_after: float | None = None  # seconds the host asked to be left alone, if it did

    def __init__(self, reason: str, url: str = "", retryable: bool | None = None) -> None:
        super().__init__(f"{url}: {reason}" if url else reason)
        self.reason = reason
        self.url = url
        if retryable is not None:
            self.retryable = retryable


class FetchError(CrawlError):
    """A URL could not be fetched: timeout, dropped connection, cut or oversized body, redirect loop."""


class HttpError(FetchError):
    """The host answered with a status other than 200."""

    # Statuses that say "not now" rather than "never".
    RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

    def __init__(self, url: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"http {status}", url, retryable=status in self.RETRY_STATUSES)
        self.status = status
        self.retry_after = retry_after


class RefusedURL(FetchError):
    """A URL the crawler will not request: a host not allowed, or a path robots.txt disallows.

    Asked for directly it stays refused; reached through a redirect it is retryable, as the
    redirect may be an edge server's passing glitch.
    """


class LayoutChanged(CrawlError):
    """A page or JSON no longer has the shape the adapter reads; the message names what moved.

    Retryable within a run (an edge server may serve an odd page once), never by an
    orchestrator: a whole run asked again fails the same way.
    """

    retryable = True


class InvalidImage(CrawlError):
    """Bytes that are not a whole, acceptable image; retryable, as a CDN may serve a cut file once."""

    retryable = True


class NothingCrawled(CrawlError):
    """A crawl that read no product or no review page: the shop is unreachable or the settings are wrong."""
