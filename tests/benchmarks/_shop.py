"""A demo shop for benchmarks: generated once into a temporary folder, served with a request log."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from reviewlens.demoshop.generate import GeneratorConfig, generate
from reviewlens.settings import CrawlConfig

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


def read_log(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most times falling in any half-open window of `window` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
