"""A demo shop for benchmarks: generated once into a temporary folder, served with a request log."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.settings import CrawlConfig, from_mapping
from demo.shop.generate import GeneratorConfig, generate
from demo.shop.server import DemoShop
from reviewlens.labelstudio_server import Credentials, LabelStudioServer
from tests.benchmarks._smoke import sized
from tests.procs import free_port
from tests.shoplog import max_in_window, read_log

__all__ = ["crawl_config", "local_label_studio", "make_shop", "max_in_window", "read_log", "workdir"]

BENCH_SHOP = GeneratorConfig(seed=1, n_categories=2, products_per_category=5, photos_per_product=36)
# At smoke size: the same kinds of photo, a tenth as many.
SMOKE_SHOP = GeneratorConfig(seed=1, n_categories=2, products_per_category=3, photos_per_product=10)


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"reviewlens-{name}-"))


def make_shop(root: Path) -> Path:
    return generate(sized(BENCH_SHOP, SMOKE_SHOP), root / "shop")


def crawl_config(shop: DemoShop, **overrides: object) -> CrawlConfig:
    return from_mapping(CrawlConfig, {**shop.crawl_settings(), **overrides})


def local_label_studio(root: Path) -> tuple[LabelStudioServer, Credentials]:
    """A Label Studio of its own in `root`, serving photos from below it, started; this process's
    environment points at it (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, LOCAL_FILES_DOCUMENT_ROOT)."""
    os.environ["LOCAL_FILES_DOCUMENT_ROOT"] = str(root.resolve())
    server = LabelStudioServer(root / "label-studio", root, port=free_port())
    creds = server.start()
    os.environ["LABEL_STUDIO_URL"], os.environ["LABEL_STUDIO_API_KEY"] = server.url, creds.token
    return server, creds
