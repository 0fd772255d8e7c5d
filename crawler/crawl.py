"""The crawl: best sellers of each category, then their new review photos, into store and manifest.

Every photo ends either stored (a `sources` row) or recorded as failed with its reason (a
`failures` row); a failed photo is tried again by the next crawl.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from tqdm import tqdm

from core import queries as q
from core.errors import ConfigError
from core.layout import Layout
from core.manifest import CATALOG_REVIEW, Manifest, open_manifest, utc_now
from core.settings import CrawlConfig
from core.store import shared_store
from crawler.download import Downloaded, RemoteDownloads, download, download_remotely, make_fetcher
from crawler.errors import CrawlError, LayoutChanged, NothingCrawled
from crawler.fetch import Fetcher
from crawler.ohouse import (
    OhouseAdapter,
    Parsed,
    RankedProduct,
    Review,
    get_adapter,
    load_json,
    parse_catalog_photo,
    parse_ranking_html,
    parse_ranking_json,
    parse_reviews,
)
from crawler.store import PhotoStore, StoredPhoto

log = logging.getLogger(__name__)
RANKING_SOURCES = ("json", "html")
# A shop's ranking or reviews page is tens of kilobytes: a page larger than this is refused before
# it is parsed (parsing takes many times its size in memory).
PAGE_MAX_BYTES = 5_000_000
# Pages of one ranking read at most: one that never ends, or repeats, stops here.
MAX_RANKING_PAGES = 50
T = TypeVar("T")


@dataclass
class CrawlSummary:
    products: int = 0
    review_pages: int = 0
    photos_stored: int = 0  # review photos
    catalog_photos: int = 0  # the shop's own photos of its products
    photos_failed: int = 0
    bytes: int = 0
    wall_s: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    # Pages whose layout was not the one the adapter reads: the crawl goes on, then fails loudly.
    layout_errors: list[str] = field(default_factory=list)
    # Pages that could not be fetched: read again next run; a crawl that read none fails.
    page_errors: list[str] = field(default_factory=list)
    # Items of a page that did not read, each a bad_items row: the page's other items were crawled.
    bad_items: int = 0

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        catalog = f", {self.catalog_photos} catalog photos" if self.catalog_photos else ""
        return (
            f"{self.products} products, {self.review_pages} review pages, {self.photos_stored} photos stored"
            f"{catalog} ({self.bytes / 1e6:.1f} MB), {self.photos_failed} failed ({reasons})"
            + (f", {self.bad_items} page items unreadable (table bad_items)" if self.bad_items else "")
            + f" in {self.wall_s:.1f}s"
        )


@dataclass(frozen=True)
class _Job:
    product_id: str
    category_id: int
    review: Review


@dataclass
class _Batch:
    product_id: str | None  # None: photos that failed in an earlier run
    complete: bool  # every review page of the product was read
    jobs: list[_Job]
    futures: list[Future[Downloaded]]
    recorded: int = 0


@dataclass
class _Crawl:
    config: CrawlConfig
    adapter: OhouseAdapter
    fetcher: Fetcher
    store: PhotoStore
    manifest: Manifest
    summary: CrawlSummary
    # Where photos download: this crawl's threads, or a cluster's processes (`remote` set).
    downloads: Executor
    remote: RemoteDownloads | None = None
    batches: deque[_Batch] = field(default_factory=deque)

    def fetch_page(self, url: str, parse: Callable[[bytes], T]) -> T:
        """Fetches and parses one page; an odd answer (a moved field, a foreign redirect) is asked
        for again under the fetcher's retry policy, and one that persists is raised."""
        return self.fetcher.fetch(url, parse, PAGE_MAX_BYTES)

    def fetch_items(self, url: str, parse: Callable[[bytes], Parsed[T]]) -> list[T]:
        """The items of one page that read; those that do not are kept as bad_items rows of the page."""
        parsed = self.fetch_page(url, parse)
        with self.manifest.transaction() as db:
            db.run(q.FORGET_BAD_ITEMS, self.adapter.name, url)
            for place, reason in parsed.bad:
                db.run(q.INSERT_BAD_ITEM, self.adapter.name, url, place, reason[:500], utc_now())
        for place, reason in parsed.bad:
            log.warning("%s: item %d does not read (%s); the page's other items are crawled", url, place, reason)
        self.summary.bad_items += len(parsed.bad)
        return parsed.items

    def top_products(self, category_id: int) -> list[RankedProduct]:
        if self.config.ranking_source == "html":
            ids = self.fetch_page(
                self.adapter.ranking_html_url(category_id),
                lambda body: parse_ranking_html(body.decode("utf-8", errors="replace")),
            )
            return [RankedProduct(pid, "", 0) for pid in ids[: self.config.top_n]]
        ranked: dict[str, RankedProduct] = {}  # a product listed twice is crawled once, at its best rank
        page = 1
        while len(ranked) < self.config.top_n and page <= MAX_RANKING_PAGES:
            url = self.adapter.ranking_json_url(category_id, page)
            found = self.fetch_items(url, lambda b: parse_ranking_json(load_json(b, "ranking")))
            if not found:
                break
            for product in found:
                ranked.setdefault(product.product_id, product)
            page += 1
        return list(ranked.values())[: self.config.top_n]

    def known(self, review: Review) -> bool:
        return self.manifest.row(q.SOURCE_KNOWN, self.adapter.name, review.review_id, review.photo_url) is not None

    def new_reviews(self, product_id: str, complete: bool) -> Iterator[Review]:
        """Yields reviews with a photo not yet stored, newest first.

        Once a product was read to the end, a re-crawl stops at the first page holding a known
        review: reviews come newest first, so what follows is known too.
        """
        seen = 0
        for page in range(1, 1_000_000):
            self.collect(block=False)
            url = self.adapter.reviews_url(product_id, page)
            reviews = self.fetch_items(url, lambda b: parse_reviews(load_json(b, "reviews")))
            self.summary.review_pages += 1
            if not reviews:
                return
            hit_known = False
            for review in reviews:
                seen += 1
                if not review.photo_url:
                    continue
                if self.known(review):
                    hit_known = True
                else:
                    yield review
            if (hit_known and complete) or seen >= self.config.max_reviews_per_product:
                return

    def start_download(self, job: _Job) -> Future[Downloaded]:
        url = job.review.photo_url
        if self.remote is not None:
            return self.downloads.submit(download_remotely, self.remote, url)
        return self.downloads.submit(download, self.fetcher, self.store, url, self.config.max_image_bytes)

    def record(self, job: _Job, photo: StoredPhoto | None, reason: str) -> None:
        shop, r, now = self.adapter.name, job.review, utc_now()
        with self.manifest.transaction() as db:
            if photo is None:
                db.run(q.UPSERT_FAILURE, shop, r.review_id, r.photo_url, job.product_id, job.category_id, r.created_at,
                       reason, now)  # fmt: skip
                self.summary.photos_failed += 1
                key = reason.split(":")[0]
                self.summary.failures[key] = self.summary.failures.get(key, 0) + 1
                return
            db.run(q.INSERT_PHOTO, photo.sha256, photo.path, photo.format, photo.width, photo.height, photo.bytes, now)
            db.run(q.INSERT_SOURCE, shop, r.review_id, r.photo_url, job.product_id, job.category_id, photo.sha256,
                   r.created_at, now)  # fmt: skip
            db.run(q.DELETE_FAILURE, shop, r.review_id, r.photo_url)
            catalog = r.review_id == CATALOG_REVIEW
            if catalog:
                # The shop's own photo shows its product by definition: no person needs to judge it.
                db.run(q.ACCEPT_IMPORTED, photo.sha256, now, "the shop's catalog photo", now)
        if catalog:
            self.summary.catalog_photos += 1
        else:
            self.summary.photos_stored += 1
        self.summary.bytes += photo.bytes

    def submit(self, jobs: list[_Job], product_id: str | None, complete: bool) -> None:
        """Starts downloading `jobs`; their results are recorded by collect(), in this order."""
        self.batches.append(_Batch(product_id, complete, jobs, [self.start_download(j) for j in jobs]))

    def collect(self, block: bool) -> None:
        """Records finished downloads in submission order; marks a product complete once all are.

        Called between page fetches, so pages keep their rate while photos download.
        """
        while self.batches:
            batch = self.batches[0]
            while batch.recorded < len(batch.futures):
                future = batch.futures[batch.recorded]
                if not block and not future.done():
                    return
                self.record(batch.jobs[batch.recorded], *future.result())
                batch.recorded += 1
            if batch.product_id is not None and batch.complete:
                self.manifest.write(q.PRODUCT_REVIEWS_COMPLETE, utc_now(), self.adapter.name, batch.product_id)
            self.batches.popleft()

    def run_jobs(self, jobs: list[_Job]) -> None:
        """Downloads and records `jobs`, waiting for all of them."""
        self.submit(jobs, None, False)
        self.collect(block=True)

    def catalog_job(self, product_id: str, category_id: int) -> _Job | None:
        """The download of the product's catalog photo when its page names one not yet stored."""
        shop = self.adapter.name
        if self.manifest.row(q.PRODUCT_SOURCE_KNOWN, shop, product_id, CATALOG_REVIEW) is not None:
            return None
        page = self.adapter.product_url(product_id)
        try:
            url = self.fetch_page(page, lambda b: parse_catalog_photo(b.decode("utf-8", errors="replace"), page))
        except CrawlError as exc:
            _page_failed(self.summary, f"page of product {product_id}", exc)
            return None
        return _Job(product_id, category_id, Review(CATALOG_REVIEW, "", url, "")) if url else None

    def failed_jobs(self) -> list[_Job]:
        rows = self.manifest.rows(q.FAILED_PHOTOS, self.adapter.name)
        return [
            _Job(
                r["product_id"],
                r["category_id"],
                Review(r["review_id"], r["review_created_at"] or "", r["photo_url"], ""),
            )
            for r in rows
        ]


def crawl(config: CrawlConfig, layout: Layout, cluster: Executor | None = None, processes: int = 1) -> CrawlSummary:
    """Crawls the shop into `layout`'s store and manifest; returns counts per outcome.

    Photos download in this process's threads, or on a `cluster` (an executor whose `processes`
    download at once, each at its share of the photo hosts' rate: flows/dask.py); pages are read
    and every result recorded here.
    """
    started = time.monotonic()
    if config.ranking_source not in RANKING_SOURCES:
        raise ConfigError(f"unknown ranking_source '{config.ranking_source}'; valid: {', '.join(RANKING_SOURCES)}")
    adapter = get_adapter(config.shop, config.shop_url, config.ranking_url)
    fetcher = make_fetcher(config)
    remote = None if cluster is None else RemoteDownloads(config, layout, 1 / max(1, processes))
    store = PhotoStore(layout.store_dir, config.max_image_pixels, shared_store(layout))
    swept = store.sweep_temporary()
    if swept:
        log.info("removed %d temporary files left by an interrupted run", swept)
    summary = CrawlSummary()
    with (
        open_manifest(layout, create=True) as manifest,
        ThreadPoolExecutor(config.image_workers) as threads,
        tqdm(desc="products", unit="product", disable=None) as progress,  # shown on a terminal only
    ):
        run = _Crawl(config, adapter, fetcher, store, manifest, summary, cluster or threads, remote)
        # Photos that failed last time go first, whatever their product's paging does now.
        run.run_jobs(run.failed_jobs())
        for category_id in config.categories:
            try:
                ranked_products = run.top_products(category_id)
            except CrawlError as exc:
                _page_failed(summary, f"ranking of category {category_id}", exc)
                continue
            progress.total = (progress.total or 0) + len(ranked_products)
            for rank, ranked in enumerate(ranked_products, start=1):
                _crawl_product(run, category_id, rank, ranked)
                progress.update()
                progress.set_postfix(photos=summary.photos_stored, failed=summary.photos_failed)
        run.collect(block=True)
    summary.wall_s = time.monotonic() - started
    if summary.layout_errors:
        shown = "; ".join(summary.layout_errors[:3])
        raise LayoutChanged(
            f"{len(summary.layout_errors)} pages had an unexpected layout ({shown}). Crawled: {summary}"
        )
    if summary.products == 0 or (summary.review_pages == 0 and summary.page_errors):
        # A scheduled run must notice a crawl that read nothing: a dead host, a wrong URL or category.
        reasons = "; ".join(summary.page_errors[:3]) or "the rankings listed no product"
        raise NothingCrawled(f"no product or review page could be read from {config.shop_url}: {reasons}")
    return summary


def _page_failed(summary: CrawlSummary, what: str, exc: CrawlError) -> None:
    if isinstance(exc, LayoutChanged):
        summary.layout_errors.append(f"{what}: {exc}")
        log.error("%s: the page layout changed: %s", what, exc)
    else:
        summary.page_errors.append(f"{what}: {exc.reason}")
        log.warning("%s could not be fetched: %s; it is read again next run", what, exc)


def _crawl_product(run: _Crawl, category_id: int, rank: int, ranked: RankedProduct) -> None:
    shop, pid = run.adapter.name, ranked.product_id
    row = run.manifest.row(q.PRODUCT_SEEN, shop, pid)
    complete = row is not None and row["reviews_complete_at"] is not None
    name = ranked.name or (row["name"] if row else "")
    jobs: list[_Job] = []
    if run.config.catalog_photos and not complete:  # read until the product's reviews were read once
        catalog = run.catalog_job(pid, category_id)
        jobs += [catalog] if catalog else []
    try:
        for review in run.new_reviews(pid, complete):
            name = name or review.product_name
            jobs.append(_Job(pid, category_id, review))
    except CrawlError as exc:
        # The photos found so far are fetched; the product's pages are read again next run.
        _page_failed(run.summary, f"reviews of product {pid}", exc)
        complete_now = False
    else:
        complete_now = True
    run.manifest.write(
        q.UPSERT_PRODUCT,
        shop,
        pid,
        category_id,
        name or f"product {pid}",
        run.adapter.product_url(pid),
        rank,
        utc_now(),
    )
    run.submit(jobs, pid, complete_now)
    run.summary.products += 1
