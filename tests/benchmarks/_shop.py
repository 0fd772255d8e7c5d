"""A demo shop for benchmarks: generated once into a temporary folder, served with a request log."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from reviewlens.demoshop.generate import GeneratorConfig, generate
from reviewlens.settings import CrawlConfig
from tests.shoplog import max_in_window, read_log

__all__ = ["crawl_config", "make_shop", "max_in_window", "read_log", "workdir"]

BENCH_SHOP = GeneratorConfig(seed=1, n_categories=2, products_per_category=5, photos_per_product=36)


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"reviewlens-{name}-"))


def make_shop(root: Path) -> Path:
    return generate(BENCH_SHOP, root / "shop")


def crawl_config(shop: object, **overrides: object) -> CrawlConfig:
    base = CrawlConfig(
        shop_url=shop.url,  # type: ignore[attr-defined]
        ranking_url=shop.url,  # type: ignore[attr-defined]
        image_hosts=(urlsplit(shop.image_url).netloc,),  # type: ignore[attr-defined]
        categories=tuple(sorted({p.category_id for p in shop.data.products})),  # type: ignore[attr-defined]
    )
    return CrawlConfig(**{**base.__dict__, **overrides})  # type: ignore[arg-type]
