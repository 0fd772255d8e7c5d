"""Crawl rate against the demo shop with 50 ms added latency, side by side with a plain loop.

Figures: achieved API requests per second / the configured limit (from the shop's log), the
busiest one-second window, and photos per second of reviewlens's photo path / a plain
sequential `requests.get` loop over the same photos.

    .venv/bin/python -m tests.benchmarks.crawl_rate
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from core.layout import Layout
from core.manifest import open_manifest
from crawler.crawl import _Crawl, _Job, crawl  # the photo path alone is timed, without the pages
from crawler.fetch import Fetcher
from crawler.ohouse import Review, get_adapter
from crawler.store import PhotoStore
from demo.shop.faults import FaultPlan
from demo.shop.server import DemoShop
from tests.benchmarks._shop import crawl_config, make_shop, max_in_window, read_log, workdir
from tests.benchmarks._smoke import parser
from tests.db import count

API_RATE = 5.0
IMAGE_RATE = 200.0
WORKERS = 16


def main() -> None:
    parser(__doc__).parse_args()
    root = workdir("crawl-rate")
    shop_dir = make_shop(root)
    with DemoShop(shop_dir, request_log=root / "requests.jsonl", faults=FaultPlan({}, latency_s=0.05)) as shop:
        config = crawl_config(shop, api_rate=API_RATE, image_rate=IMAGE_RATE, image_workers=WORKERS)
        layout = Layout(root / "crawl")
        summary = crawl(config, layout)
        crawled = str(summary)
        log = read_log(root / "requests.jsonl")
        api = sorted(float(r["t"]) for r in log if r["host"] == shop.url and r["path"] != "/robots.txt")
        achieved = (len(api) - 1) / (api[-1] - api[0])
        busiest = max_in_window(api)

        with open_manifest(layout) as m:
            urls = [r[0] for r in m.conn.execute("SELECT photo_url FROM sources ORDER BY photo_url")]

        started = time.monotonic()
        for url in urls:  # the baseline: what a plain script does
            requests.get(url, timeout=30).content  # noqa: B018
        plain = len(urls) / (time.monotonic() - started)

        fresh = Layout(root / "photos-only")
        fetcher = Fetcher(
            frozenset({config.image_hosts[0]}), config.user_agent, rates={config.image_hosts[0]: IMAGE_RATE}
        )
        jobs = [_Job("p", 0, Review(str(i), "", url, "")) for i, url in enumerate(urls)]
        with open_manifest(fresh, create=True) as manifest, ThreadPoolExecutor(WORKERS) as pool:
            run = _Crawl(
                config,
                get_adapter("ohouse", shop.url, shop.url),
                fetcher,
                PhotoStore(fresh.store_dir),
                manifest,
                summary,
                pool,
            )
            started = time.monotonic()
            run.run_jobs(jobs)
            ours = len(urls) / (time.monotonic() - started)
            assert count(manifest, "photos") == len(urls)

    print(f"crawl: {crawled}")
    print(f"api_requests: {len(api)} at a limit of {API_RATE:.1f}/s")
    print(f"api_rate_achieved_per_s: {achieved:.2f}")
    print(f"api_busiest_one_second_window: {busiest} (limit {API_RATE:.0f})")
    print(f"photos_per_s_plain_loop: {plain:.1f}")
    print(f"photos_per_s_reviewlens: {ours:.1f} ({WORKERS} workers, image host limit {IMAGE_RATE:.0f}/s)")
    print(f"photo_speedup_vs_plain_loop: {ours / plain:.2f}")
    print(f"api_rate_ratio: {achieved / API_RATE:.3f}")


if __name__ == "__main__":
    main()
