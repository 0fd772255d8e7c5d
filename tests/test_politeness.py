"""Crawler manners and faults, checked from the demo shop's own request log."""

from __future__ import annotations

import hashlib
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from PIL import Image

from core.layout import Layout
from core.manifest import open_manifest
from crawler.crawl import crawl
from crawler.errors import LayoutChanged
from crawler.polite import WINDOW_S, RateLimiter, retry_after_seconds
from demo.shop.faults import FaultPlan
from demo.shop.generate import load_truth
from demo.shop.server import DemoShop
from tests.conftest import crawl_config
from tests.db import count, run
from tests.shoplog import max_in_window, read_log

# The subject is the crawler's manners as the shop sees them, not the manifest: SQLite alone (the
# crawl's writes run on both engines in test_crawler.py).


def log_of(tmp_path: Path) -> list[dict[str, object]]:
    return read_log(tmp_path / "requests.jsonl")


def test_rate_limiter_never_exceeds_its_rate_across_threads() -> None:
    limiter, starts, lock = RateLimiter(10), [], threading.Lock()

    def work() -> None:
        for _ in range(8):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 24 and max_in_window(starts, WINDOW_S) <= 10
    assert max(starts) - min(starts) >= 2.0  # 24 starts at 10 per second


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("3") == 3.0
    assert 9 <= retry_after_seconds(formatdate(time.time() + 10, usegmt=True)) <= 11  # type: ignore[operator]
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_api_rate_and_robots_as_the_shop_sees_them(shop: DemoShop, layout: Layout, tmp_path: Path) -> None:
    config = crawl_config(shop, api_rate=8.0, user_agent="reviewlens-test (+https://example.org/contact)")
    crawl(config, layout)
    log = log_of(tmp_path)
    api = [r for r in log if r["host"] == shop.url]
    assert max_in_window([float(r["t"]) for r in api if r["path"] != "/robots.txt"]) <= 8
    assert {r["ua"] for r in log} == {"reviewlens-test (+https://example.org/contact)"}
    robots = [r["host"] for r in log if r["path"] == "/robots.txt"]
    assert sorted(robots) == sorted([shop.url, shop.image_url])  # once per host
    assert log.index(next(r for r in log if r["host"] == shop.url)) == log.index(
        next(r for r in api if r["path"] == "/robots.txt")
    )


def test_retry_after_pauses_the_whole_host(shop: DemoShop, shop_dir: Path, layout: Layout, tmp_path: Path) -> None:
    shop.faults = FaultPlan({"429": 0.05}, seed=3, retry_after_s=1)
    summary = crawl(crawl_config(shop), layout)
    assert summary.photos_stored == len(load_truth(shop_dir))
    log = log_of(tmp_path)
    refused = [r for r in log if r["fault"] == "429"]
    assert refused
    for r in refused:
        # Requests already on the wire when the 429 came back arrive in its first moments (a loaded
        # machine can take a few hundred milliseconds to deliver them).
        after = [float(x["t"]) for x in log if x["host"] == r["host"] and 0.3 < float(x["t"]) - float(r["t"]) < 0.9]
        assert not after, f"{len(after)} requests to {r['host']} within the second it asked to wait"


def test_redirects_never_reach_a_foreign_host_or_a_disallowed_path(
    shop: DemoShop, shop_dir: Path, layout: Layout, tmp_path: Path
) -> None:
    shop.faults = FaultPlan({"redirect": 0.3}, seed=5)
    crawl(crawl_config(shop), layout)
    log = log_of(tmp_path)
    assert any(r["fault"] == "redirect" for r in log)
    assert not [r for r in log if r["host"] == shop.foreign_url]
    assert not [r for r in log if str(r["path"]).startswith("/private")]
    with open_manifest(layout) as m:
        reasons = {r[0] for r in run(m, "SELECT reason FROM failures")}
    assert reasons <= {f"host not allowed: {shop.foreign_url.removeprefix('http://')}", "disallowed by robots.txt"}
    shop.faults = None
    crawl(crawl_config(shop), layout)  # the shop behaves again: the re-run completes the store
    with open_manifest(layout) as m:
        assert count(m, "photos") == len(load_truth(shop_dir)) and count(m, "failures") == 0


def test_default_fault_mix_ends_with_every_photo_intact_after_one_rerun(
    shop: DemoShop, shop_dir: Path, layout: Layout
) -> None:
    shop.faults = FaultPlan.parse("default", 0.1, seed=11, stall_s=3.0, slow_s=0.2, oversize_bytes=3_000_000)
    config = crawl_config(shop, read_timeout_s=1.5, max_image_bytes=2_000_000, max_image_pixels=40_000_000)
    for _ in range(2):
        try:
            crawl(config, layout)
        except LayoutChanged as exc:
            assert "not found" in str(exc)  # drifted pages are named, and the crawl went on
    truth = load_truth(shop_dir)
    with open_manifest(layout) as m:
        rows = run(m, "SELECT sha256, path FROM photos").fetchall()
        assert count(m, "failures") == 0
    assert len(rows) == len(truth)
    for r in rows:  # intact: the bytes hash to their name and decode whole
        data = (layout.store_dir / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        with Image.open(layout.store_dir / r["path"]) as img:
            img.load()
    assert not list(layout.store_dir.rglob(".tmp-*"))


def test_a_redesigned_shop_fails_loudly_and_stores_nothing(shop: DemoShop, layout: Layout) -> None:
    shop.faults = FaultPlan({"drift": 1.0})
    with pytest.raises(LayoutChanged, match="field 'products' not found"):
        crawl(crawl_config(shop), layout)
    with open_manifest(layout) as m:
        assert count(m, "photos") == count(m, "sources") == 0
