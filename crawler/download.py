"""One photo's download: fetched politely, checked, stored; in the crawl's threads or elsewhere.

The crawl's own threads share one fetcher, so its rate limits hold across them. A cluster's
worker (flows/dask.py) gets the crawl's settings instead, with its share of the photo hosts'
rate, and builds its fetcher and store once per process: the workers together keep the rate the
settings allow. The crawl records every result in the manifest itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from core.layout import Layout
from core.settings import CrawlConfig
from core.store import shared_store
from crawler.errors import CrawlError
from crawler.fetch import Fetcher
from crawler.store import PhotoStore, StoredPhoto

# A photo stored, or None and the reason it failed.
Downloaded = tuple[StoredPhoto | None, str]


def make_fetcher(config: CrawlConfig) -> Fetcher:
    """The fetcher of a crawl's settings: its hosts only, each at its rate."""
    api_hosts = {urlsplit(config.shop_url).netloc, urlsplit(config.ranking_url).netloc}
    rates = {**{h: config.image_rate for h in config.image_hosts}, **{h: config.api_rate for h in api_hosts}}
    return Fetcher(
        allowed_hosts=frozenset(rates),
        user_agent=config.user_agent,
        rates=rates,
        connect_timeout_s=config.connect_timeout_s,
        read_timeout_s=config.read_timeout_s,
        total_timeout_s=config.total_timeout_s,
        retries=config.retries,
        backoff_s=config.backoff_s,
    )


def download(fetcher: Fetcher, store: PhotoStore, url: str, max_bytes: int) -> Downloaded:
    """Fetches and stores one photo; returns it, or the reason it failed.

    A body that is not a whole image is asked for again like a failed request: a CDN hiccup
    often serves an error page or a cut file once. What stays bad is the reason.
    """
    try:
        return fetcher.fetch(url, store.put, max_bytes), ""
    except CrawlError as exc:
        return None, exc.reason


@dataclass(frozen=True)
class RemoteDownloads:
    """What another process needs to download a crawl's photos (picklable and hashable)."""

    config: CrawlConfig
    layout: Layout
    share: float  # of the photo hosts' rate: 1 / the number of processes downloading


@functools.lru_cache(maxsize=4)
def _tools(remote: RemoteDownloads) -> tuple[Fetcher, PhotoStore]:
    config = replace(remote.config, image_rate=remote.config.image_rate * remote.share)
    store = PhotoStore(remote.layout.store_dir, config.max_image_pixels, shared_store(remote.layout))
    return make_fetcher(config), store


def download_remotely(remote: RemoteDownloads, url: str) -> Downloaded:
    """One photo's download in a worker process, with that process's fetcher and store."""
    fetcher, store = _tools(remote)
    return download(fetcher, store, url, remote.config.max_image_bytes)
