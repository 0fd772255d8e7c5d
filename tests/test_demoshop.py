"""The demo shop: deterministic generation with known rule-breakers, served in the real shop's shapes."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import requests

from demo.shop.generate import generate, load_catalog, load_truth
from demo.shop.server import REVIEWS_PER_PAGE, DemoShop
from tests.conftest import SMALL_SHOP


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != "generated.json":
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    config = replace(SMALL_SHOP, n_categories=1, products_per_category=2, photos_per_product=8)
    a = generate(config, tmp_path / "a")
    b = generate(config, tmp_path / "b")
    c = generate(replace(config, seed=config.seed + 1), tmp_path / "c")
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_catalog_has_distinct_designs_and_known_rule_breakers(shop_dir: Path) -> None:
    products = load_catalog(shop_dir)
    assert len(products) == SMALL_SHOP.n_categories * SMALL_SHOP.products_per_category
    assert len({(p.shape, p.pattern, p.colours) for p in products}) == len(products)
    truth = load_truth(shop_dir)
    per_product = Counter(t.product_id for t in truth.values() if t.kind != "cross")
    assert set(per_product.values()) == {SMALL_SHOP.photos_per_product}
    # Cross posts: another product's clean photo, of the same category, as the newest review.
    crossed = [t for t in truth.values() if t.kind == "cross"]
    assert len(crossed) == SMALL_SHOP.cross_posts
    category = {p.product_id: p.category_id for p in products}
    for t in crossed:
        original = truth[t.duplicate_of or ""]
        assert original.kind == "clean" and original.product_id != t.product_id
        assert category[original.product_id] == category[t.product_id]
        newest = max(u.created_at for u in truth.values() if u.product_id == t.product_id and u.kind != "cross")
        assert t.created_at > newest
    kinds = Counter(t.kind for t in truth.values())
    n = len(truth)
    assert kinds["small"] == round(SMALL_SHOP.photos_per_product * SMALL_SHOP.small_share) * len(products)
    assert kinds["multi"] > 0 and kinds["repost"] > 0 and kinds["clean"] > n / 2
    for t in truth.values():
        # The truth never sits on the rule's line: clean photos clearly pass, small ones clearly fail.
        if t.kind == "clean":
            assert t.coverage >= 0.55 and t.n_objects == 1
        if t.kind == "small":
            assert t.coverage <= 0.35
        if t.kind == "multi":
            assert t.n_objects == 2
        if t.kind == "repost":
            assert t.duplicate_of in truth and truth[t.duplicate_of].product_id == t.product_id


def test_server_speaks_the_shop_shapes(shop: DemoShop) -> None:
    category = shop.data.products[0].category_id
    ranks = requests.get(
        f"{shop.url}/commerces/ranks.json",
        params={"v": 2, "type": "best", "category": category, "page": 1, "per": 20},
        timeout=5,
    ).json()
    ids = [p["id"] for p in ranks["products"]]
    assert ids and all("review_count" in p for p in ranks["products"])
    page = requests.get(f"{shop.url}/ranks", params={"type": "best", "category_id": category}, timeout=5).text
    assert all(f"/productions/{i}/selling" in page for i in ids)
    pages, reviews = 0, []
    while True:
        pages += 1
        body = requests.get(
            f"{shop.url}/production_reviews.json",
            params={"production_id": ids[0], "page": pages, "order": "recent"},
            timeout=5,
        ).json()
        if not body["reviews"]:
            break
        assert len(body["reviews"]) <= REVIEWS_PER_PAGE
        reviews += body["reviews"]
    assert len(reviews) == body["count"]
    assert [r["created_at"] for r in reviews] == sorted((r["created_at"] for r in reviews), reverse=True)
    with_photo = [r for r in reviews if r["card"]["image_url"]]
    assert len(with_photo) < len(reviews)  # reviews without a photo carry an empty image_url
    photo = requests.get(with_photo[0]["card"]["image_url"], timeout=5)
    assert photo.status_code == 200 and photo.content[:2] == b"\xff\xd8"
    assert with_photo[0]["card"]["image_url"].startswith(shop.image_url)
    assert requests.get(f"{shop.image_url}/reviews/..%2Fcatalog.json", timeout=5).status_code == 404
