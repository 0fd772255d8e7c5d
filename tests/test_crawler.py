"""The crawler: parsers on saved responses, and crawls of the real demo shop over HTTP."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from core import queries as q
from core.errors import ConfigError
from core.layout import Layout
from core.manifest import NoManifest, open_manifest
from core.settings import CrawlConfig, DedupeConfig, from_mapping
from crawler.crawl import crawl
from crawler.errors import FetchError, InvalidImage, LayoutChanged, NothingCrawled
from crawler.fetch import Fetcher
from crawler.ohouse import (
    get_adapter,
    load_json,
    parse_catalog_photo,
    parse_ranking_html,
    parse_ranking_json,
    parse_reviews,
)
from crawler.store import PhotoStore
from curation.dedupe.grouping import dedupe
from demo.shop.generate import GeneratorConfig, generate, load_truth
from demo.shop.server import DemoShop
from reviewlens.cli import main
from tests.conftest import crawl_config, free_port
from tests.db import count, run

# The manifest's queries, the same on both engines: each test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_engines

REVIEWS_PAGE = {
    "count": 2,
    "average_all": 4.5,
    "reviews": [
        {
            "id": 11,
            "created_at": "2026-01-02T00:00:00",
            "writer_id": 1,
            "writer_nickname": "a",
            "card": {"image_url": "https://image.example/1.jpg"},
            "review": {"comment": "", "star_avg": 5},
            "production_information": {"name": "Lamp", "explain": ""},
        },
        {
            "id": 10,
            "created_at": "2026-01-01T00:00:00",
            "writer_id": 2,
            "writer_nickname": "b",
            "card": {"image_url": ""},
            "review": {"comment": "", "star_avg": 4},
            "production_information": {"name": "Lamp", "explain": ""},
        },
    ],
}


def test_parsers_read_the_documented_shapes() -> None:
    ranked = parse_ranking_json({"products": [{"id": 5, "review_count": 3, "name": "Sofa"}, {"id": 6}]}).items
    assert [(p.product_id, p.name, p.review_count) for p in ranked] == [("5", "Sofa", 3), ("6", "", 0)]
    html = '<div class="x1"><a href="https://ohou.se/productions/42/selling">A</a></div><a href="/productions/7">B</a>'
    assert parse_ranking_html(html + html) == ["42", "7"]
    reviews = parse_reviews(REVIEWS_PAGE).items
    assert [(r.review_id, r.photo_url) for r in reviews] == [("11", "https://image.example/1.jpg"), ("10", "")]
    assert parse_reviews({"count": 2, "reviews": []}).items == []


def test_an_item_that_does_not_read_is_set_aside_and_the_others_are_read() -> None:
    """One hostile item of a page costs that item, named by its place and field, not the page."""
    page = {"products": [{"id": 5, "review_count": "abc"}, "6", {"id": 7, "review_count": 2}, {"id": {"x": 1}}]}
    parsed = parse_ranking_json(page)
    assert [p.product_id for p in parsed.items] == ["7"]
    assert [(place, reason.split("'")[1]) for place, reason in parsed.bad] == [
        (0, "review_count"), (1, "products"), (3, "id")
    ]  # fmt: skip
    reviews = {"reviews": [REVIEWS_PAGE["reviews"][0], {"id": 9, "card": "x"}]}  # type: ignore[index]
    parsed_reviews = parse_reviews(reviews)
    assert [r.review_id for r in parsed_reviews.items] == ["11"]
    assert parsed_reviews.bad == [(1, "field 'card.image_url' not found (missing 'image_url')")]


@pytest.mark.parametrize(
    ("parse", "payload", "named"),
    [
        (parse_ranking_json, {"items": []}, "products"),
        (parse_ranking_json, {"products": [{"name": "no id"}]}, "id"),
        (parse_reviews, {"count": 1}, "reviews"),
        (parse_reviews, {"reviews": [{"id": 1, "photo": "x"}]}, "card.image_url"),
        # Hostile fields, each a changed layout naming the field: the crawl goes on to the next page.
        (parse_ranking_json, {"products": [{"id": 5, "review_count": "abc"}]}, "review_count"),
        (parse_ranking_json, json.loads('{"products": [{"id": 5, "review_count": 1e999}]}'), "review_count"),
        (parse_ranking_json, {"products": "all of them"}, "products"),
        (parse_ranking_json, {"products": ["5"]}, "products"),
        (parse_ranking_json, {"products": [{"id": {"nested": 5}}]}, "id"),
        (parse_reviews, {"reviews": [{"id": 1, "card": "x"}]}, "card.image_url"),
        (parse_reviews, {"reviews": [{"id": 1, "card": {"image_url": ""}, "production_information": "x"}]},
         "production_information.name"),
        (lambda body: load_json(body, "ranking"), b"[" * 200_000 + b"]" * 200_000, "nested too deep"),
    ],
)  # fmt: skip
def test_changed_layout_names_what_moved(parse: object, payload: object, named: str) -> None:
    with pytest.raises(LayoutChanged, match=named.replace(".", r"\.")):
        parse(payload)  # type: ignore[operator]


def test_ranking_page_without_product_links_is_an_error() -> None:
    with pytest.raises(LayoutChanged, match="/productions/"):
        parse_ranking_html("<html><a href='/goods/1'>x</a></html>")


def test_unknown_shop_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid shops: ohouse"):
        get_adapter("coupang", "https://x", "https://x")


def _jpeg(size: tuple[int, int] = (80, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


def test_store_refuses_what_is_not_a_whole_image(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path, max_pixels=100_000)
    good = store.put(_jpeg())
    assert store.path(good.path).read_bytes() == _jpeg() and good.path.endswith(".jpg")
    assert store.put(_jpeg()) == good  # stored once by content
    with pytest.raises(InvalidImage, match="not a decodable image"):
        store.put(b"<html>not a photo</html>")
    with pytest.raises(InvalidImage):
        store.put(_jpeg()[: len(_jpeg()) // 2])  # truncated
    with pytest.raises(InvalidImage, match="too many pixels"):
        store.put(_jpeg((400, 400)))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [Path(good.path).name]


class _Recording(BaseHTTPRequestHandler):
    """Answers 404 to robots.txt and redirects every other path to `target`; records each path asked."""

    target = ""
    asked: list[str]

    def do_GET(self) -> None:
        self.asked.append(self.path)
        if self.path == "/robots.txt" or not self.target:
            self.send_response(404)
        else:
            self.send_response(302)
            self.send_header("Location", f"{self.target}/elsewhere.jpg")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _serve(target: str) -> ThreadingHTTPServer:
    """A local server of `_Recording` handlers with a record of its own."""
    handler = type("Handler", (_Recording,), {"target": target, "asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_redirect_to_a_foreign_host_is_refused_without_fetching_it() -> None:
    # The foreign host is a real server on this machine that nobody allowed: it must hear nothing.
    foreign = _serve("")
    foreign_host = f"127.0.0.1:{foreign.server_address[1]}"
    shop = _serve(f"http://{foreign_host}")
    try:
        host = f"127.0.0.1:{shop.server_address[1]}"
        fetcher = Fetcher(frozenset({host}), "reviewlens-test", retries=0)
        with pytest.raises(FetchError, match=rf"host not allowed: {re.escape(foreign_host)}"):
            fetcher.get(f"http://{host}/photo.jpg")
        assert shop.RequestHandlerClass.asked == ["/robots.txt", "/photo.jpg"]  # type: ignore[attr-defined]
        assert foreign.RequestHandlerClass.asked == []  # type: ignore[attr-defined]
    finally:
        for server in (shop, foreign):
            server.shutdown()
            server.server_close()


def _requests(shop_log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in shop_log.read_text().splitlines()]


def test_crawl_stores_every_photo_once_with_provenance(
    shop: DemoShop, shop_dir: Path, layout: Layout, tmp_path: Path
) -> None:
    summary = crawl(crawl_config(shop), layout)
    truth = load_truth(shop_dir)
    assert summary.photos_stored == len(truth) and summary.photos_failed == 0
    with open_manifest(layout) as m:
        assert count(m, "photos") == len(truth)
        rows = run(m, "SELECT s.*, p.path FROM sources s JOIN photos p USING (sha256)").fetchall()
        assert len(rows) == len(truth)
        for r in rows:
            t = truth[r["photo_url"].rsplit("/", 1)[1].removesuffix(".jpg")]
            assert r["product_id"] == str(t.product_id) and r["review_id"] == str(t.review_id)
            assert (layout.store_dir / r["path"]).read_bytes() == (
                shop_dir / "photos" / f"{t.photo_id}.jpg"
            ).read_bytes()
        names = {r["name"] for r in run(m, "SELECT name FROM products")}
        assert names == {p.name for p in shop.data.products}
    # No writer data is kept: the manifest has no column for it.
    if not layout.database_url:
        assert "writer" not in layout.manifest_path.read_bytes().decode("latin-1")


def test_recrawl_of_an_unchanged_shop_reads_one_review_page_per_product(
    shop: DemoShop, layout: Layout, tmp_path: Path
) -> None:
    config = crawl_config(shop)
    crawl(config, layout)
    log = tmp_path / "requests.jsonl"
    before = len(_requests(log))
    again = crawl(config, layout)
    assert again.photos_stored == 0
    review_pages = [r for r in _requests(log)[before:] if "production_reviews.json" in str(r["path"])]
    assert len(review_pages) == len(shop.data.products)
    assert all("page=1&" in str(r["path"]) for r in review_pages)
    with open_manifest(layout) as m:
        assert count(m, "sources") == count(m, "photos") == sum(1 for _ in load_truth(shop.data.photos_dir.parent))


def _state(layout: Layout) -> tuple[set[tuple[str, ...]], set[str], list[str]]:
    with open_manifest(layout) as m:
        sources = {tuple(r) for r in run(m, "SELECT shop, review_id, photo_url, product_id, sha256 FROM sources")}
        photos = {r[0] for r in run(m, "SELECT sha256 FROM photos")}
    files = sorted(str(p.relative_to(layout.store_dir)) for p in layout.store_dir.rglob("*") if p.is_file())
    return sources, photos, files


def test_a_crawl_killed_mid_run_resumes_to_the_uninterrupted_result(
    shop: DemoShop, layout: Layout, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    config = crawl_config(shop)
    config_file = tmp_path / "crawl.json"
    config_file.write_text(json.dumps(config.__dict__))
    args = [
        sys.executable,
        "-m",
        "reviewlens.cli",
        "crawl",
        "--data-dir",
        str(layout.data_dir),
        "--config",
        str(config_file),
    ]
    proc = subprocess.Popen(args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(NoManifest), open_manifest(layout) as m:
            if count(m, "photos") >= 40:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open_manifest(layout) as m:
        assert 40 <= count(m, "photos") < sum(1 for _ in load_truth(shop.data.photos_dir.parent)), (
            "not killed mid-crawl"
        )
    subprocess.run(args, check=True)

    reference = Layout(tmp_path / "uninterrupted", database_url=None)  # in SQLite, whatever the engine
    crawl(config, reference)
    assert _state(layout) == _state(reference)
    assert not list(layout.store_dir.rglob(".tmp-*"))


def test_crawl_from_the_ranking_page_finds_the_same_products(shop: DemoShop, layout: Layout) -> None:
    crawl(crawl_config(shop, ranking_source="html", top_n=2), layout)
    with open_manifest(layout) as m:
        rows = run(m, "SELECT product_id, name, rank FROM products ORDER BY category_id, rank").fetchall()
    expected = [p for p in shop.data.products if p.rank <= 2]
    assert [(r["product_id"], r["name"]) for r in rows] == [(str(p.product_id), p.name) for p in expected]
    with pytest.raises(ValueError, match="ranking_source: Input should be 'json' or 'html'"):
        crawl(crawl_config(shop, ranking_source="xml"), layout)


def test_a_crawl_that_reads_nothing_fails_and_says_why(
    shop: DemoShop, layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["crawl", "--data-dir", str(layout.data_dir), "--shop-url", dead, "--backoff-s", "0.01"]) == 1
    assert "could not connect" in capsys.readouterr().err
    with pytest.raises(NothingCrawled, match="ranking of category 99: http 400"):
        crawl(crawl_config(shop, categories=[99]), layout)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"shop_url": "ohou.se"}, "not an http(s) address"),
        ({"shop_url": "ftp://ohou.se"}, "not an http(s) address"),
        ({"categories": "10000000"}, "categories: Input should be a valid tuple"),
        ({"image_hosts": "127.0.0.1:8701"}, "image_hosts: Input should be a valid tuple"),
        ({"top_n": "abc"}, "top_n: Input should be a valid integer"),
        ({"top_n": 0}, "top_n: Input should be greater than or equal to 1"),
    ],
)
def test_crawl_settings_are_checked_against_their_types_and_ranges(setting: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        from_mapping(CrawlConfig, setting)


def test_catalog_photo_is_the_product_pages_open_graph_image() -> None:
    page = "https://ohou.se/productions/7/selling"
    head = '<html><head><meta property="og:image" content="{}"></head><body></body></html>'
    assert parse_catalog_photo(head.format("https://image.ohou.se/p/7.jpg"), page) == "https://image.ohou.se/p/7.jpg"
    assert parse_catalog_photo(head.format("/images/7.jpg"), page) == "https://ohou.se/images/7.jpg"
    # A page that names no photo is a product without one, not a changed layout.
    assert parse_catalog_photo("<html><head><title>Lamp</title></head></html>", page) == ""
    assert parse_catalog_photo(head.format(" "), page) == ""


def test_crawl_keeps_each_products_catalog_photo_accepted_and_findable(
    tmp_path_factory: pytest.TempPathFactory, layout: Layout, tmp_path: Path
) -> None:
    # Five products of three shapes: two chairs and two sofas on white look alike to a perceptual hash.
    config = GeneratorConfig(seed=3, n_categories=1, products_per_category=5, photos_per_product=6, catalog_photos=True)
    shop_dir = generate(config, tmp_path_factory.mktemp("catalog-shop"))
    with DemoShop(shop_dir, request_log=tmp_path / "requests.jsonl") as shop:
        summary = crawl(crawl_config(shop), layout)
        assert summary.catalog_photos == 5 and summary.photos_stored == len(load_truth(shop_dir))
        pages_before = len(_requests(tmp_path / "requests.jsonl"))
        again = crawl(crawl_config(shop), layout)
        # A product whose reviews were read once is not asked for its page again.
        new_paths = [str(r["path"]) for r in _requests(tmp_path / "requests.jsonl")[pages_before:]]
        assert again.catalog_photos == 0 and not [p for p in new_paths if p.endswith("/selling")]
        # Without the setting, no product page is read.
        off = crawl(crawl_config(shop, catalog_photos=False), layout)
        assert off.catalog_photos == 0
    dedupe(DedupeConfig(workers=1), layout)
    with open_manifest(layout) as m:
        rows = run(
            m,
            "SELECT s.product_id, p.path, l.decision, l.reason, c.is_kept, c.is_ambiguous FROM sources s "
            "JOIN photos p USING (sha256) JOIN curation c USING (sha256) LEFT JOIN labels l USING (sha256) "
            "WHERE s.review_id = 'catalog'",
        ).fetchall()
        # The shop's photos of two look-alike products are two products, never one photo posted twice.
        assert all(r["is_kept"] == 1 and r["is_ambiguous"] == 0 for r in rows)
        assert sorted(r["product_id"] for r in rows) == sorted(str(p.product_id) for p in shop.data.products)
        for r in rows:
            stored = (layout.store_dir / r["path"]).read_bytes()
            assert stored == (shop_dir / "catalog" / f"{r['product_id']}.jpg").read_bytes()
            # The shop's own photo needs no person's judgement: accepted, never a labeling task.
            assert r["decision"] == "accept" and "catalog" in r["reason"]
        catalog = {(layout.store_dir / r["path"]).name for r in rows}
        assert not catalog & {Path(r["path"]).name for r in m.rows(q.UNLABELED_PHOTOS)}
        indexable = m.rows(q.INDEXABLE_PHOTOS)
        assert catalog <= {Path(r["path"]).name for r in indexable}
        # The index stage marks them, to search them apart (search/finder.py); customers' photos not.
        assert {Path(r["path"]).name for r in indexable if r["catalog"]} == catalog
