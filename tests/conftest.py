"""Shared fixtures: a small generated shop, its server, and one real Label Studio per session."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

# Prefect runs on its ephemeral local API, in a home of the test run's own that goes with it
# (`make test` also points HOME and the caches at a new folder).
if "PREFECT_HOME" not in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="reviewlens-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A busy 2-core machine can take longer than Prefect's default 20 s to start the ephemeral server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from core import queries as q
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import CrawlConfig, DedupeConfig, from_mapping
from crawler.crawl import crawl
from curation.dedupe.grouping import dedupe
from curation.labeling.locations import locate_products
from curation.preannotate.colocalise import CoLocaliser
from demo.shop.generate import GeneratorConfig, generate
from demo.shop.server import DemoShop
from reviewlens.labelstudio_server import LabelStudioServer
from tests.db import run, run_many
from tests.postgres import NoPostgres, PostgresServer
from tests.procs import free_port

# Small enough to crawl, label and train in seconds; every kind of rule-breaker is present.
SMALL_SHOP = GeneratorConfig(seed=7, n_categories=2, products_per_category=3, photos_per_product=30)
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def document_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder Label Studio may serve photos from; test data folders live under it."""
    root = tmp_path_factory.mktemp("served")
    os.environ["LOCAL_FILES_DOCUMENT_ROOT"] = str(root.resolve())
    return root


@pytest.fixture(scope="session")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SMALL_SHOP, tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="session")
def shop_ports() -> tuple[int, int]:
    """The demo shop's two ports, the same for every test of a run: a state crawled once and
    copied names its photos at the addresses the next test's shop serves them from."""
    return free_port(), free_port()


@pytest.fixture
def shop(shop_dir: Path, shop_ports: tuple[int, int], tmp_path: Path) -> Iterator[DemoShop]:
    port, image_port = shop_ports
    with DemoShop(shop_dir, port=port, image_port=image_port, request_log=tmp_path / "requests.jsonl") as running:
        yield running


@pytest.fixture(scope="session")
def crawled_state(shop_dir: Path, shop_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small shop crawled once per run, in SQLite: tests copy this data folder (`crawled`)."""
    layout = Layout(tmp_path_factory.mktemp("crawled") / "data", database_url=None, store_url=None)
    port, image_port = shop_ports
    with DemoShop(shop_dir, port=port, image_port=image_port) as shop:
        crawl(crawl_config(shop), layout)
    return layout.data_dir


@pytest.fixture(scope="session")
def deduped_state(crawled_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That crawl deduplicated, once per run: tests copy this data folder (`deduped`)."""
    layout = Layout(tmp_path_factory.mktemp("deduped") / "data", database_url=None, store_url=None)
    shutil.copytree(crawled_state, layout.data_dir)
    dedupe(DedupeConfig(), layout)
    return layout.data_dir


def _state_into(layout: Layout, request: pytest.FixtureRequest, deduplicated: bool) -> Layout:
    """`layout` holding the run's crawl (`deduplicated` too): a copy in SQLite; in PostgreSQL,
    whose manifest is no file to copy, the same steps run again."""
    if not layout.database_url:
        shutil.copytree(request.getfixturevalue("deduped_state" if deduplicated else "crawled_state"), layout.data_dir)
        return layout
    shop: DemoShop = request.getfixturevalue("shop")
    crawl(crawl_config(shop), layout)
    if deduplicated:
        dedupe(DedupeConfig(), layout)
    return layout


@pytest.fixture(scope="session")
def product_locations(deduped_state: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> list[Any]:
    """The co-localiser's answer for every product of the small shop, as the push keeps it
    (product_locations), fitted once for the whole run: every worker crawls the same photos, so the
    first fits them and the others read its file. Tests whose subject is not the fitting push with it
    (`located`); tests/test_colocalise.py and the demo's run fit for real."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    kept = shared / "product-locations.json"
    with FileLock(f"{kept}.lock"):
        if not kept.exists():
            layout = Layout(tmp_path_factory.mktemp("located") / "data", database_url=None, store_url=None)
            shutil.copytree(deduped_state, layout.data_dir)
            with open_manifest(layout) as m:
                products = [(r["shop"], r["product_id"]) for r in run(m, "SELECT shop, product_id FROM usable_photos")]
                locate_products(m, layout, CoLocaliser(), products, set())
                rows = [list(r) for r in run(m, "SELECT * FROM product_locations").fetchall()]
            partial = kept.with_suffix(".partial")
            partial.write_text(json.dumps(rows))
            partial.replace(kept)
    rows: list[Any] = json.loads(kept.read_text())
    return rows


@pytest.fixture
def located(deduped: Layout, product_locations: list[Any]) -> Layout:
    """This test's layout holding the small shop's crawl, deduplicated, each product located."""
    return with_locations(deduped, product_locations)


def with_locations(layout: Layout, rows: list[Any]) -> Layout:
    with open_manifest(layout) as m:
        run_many(m, "INSERT INTO product_locations VALUES (?,?,?,?,?)", rows)
    return layout


def leave_to_label(layout: Layout, per_product: int) -> int:
    """Records every usable photo but the first `per_product` of each product as imported (accepted,
    never a labeling task), so that a push sends those few: for tests whose subject is what happens
    to tasks in Label Studio, not how many there are. Returns how many are left to label."""
    with open_manifest(layout) as m:
        kept: dict[str, int] = {}
        for r in run(m, "SELECT sha256, product_id FROM usable_photos ORDER BY product_id, sha256").fetchall():
            kept[r["product_id"]] = kept.get(r["product_id"], 0) + 1
            if kept[r["product_id"]] > per_product:
                run(m, q.ACCEPT_IMPORTED, (r["sha256"], utc_now(), "imported", utc_now()))
    return sum(min(n, per_product) for n in kept.values())


@pytest.fixture
def crawled(layout: Layout, request: pytest.FixtureRequest) -> Layout:
    """This test's layout holding the small shop's crawl."""
    return _state_into(layout, request, deduplicated=False)


@pytest.fixture
def deduped(layout: Layout, request: pytest.FixtureRequest) -> Layout:
    """This test's layout holding the small shop's crawl, deduplicated."""
    return _state_into(layout, request, deduplicated=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test run's own, started once; the tests that need it skip
    with the reason where it cannot start."""
    server = PostgresServer()
    try:
        server.start()
    except NoPostgres as exc:
        server.stop()
        pytest.skip(f"PostgreSQL cannot start here: {exc}")
    yield server
    server.stop()


# The longest units of work (measured, minutes each on 2 cores), started first so that none is
# left to run alone at the end: the workers are handed them in this order.
LONGEST_FIRST = (
    "test_pipeline",
    "test_label_faults",
    "bad_inputs",
    "test_services",
    "label_faults",
    "event_latency",
    "test_overlap",
    "test_labeling_page",
    "test_ml_backend",
    "dask_scale",
    "test_dask",
    "test_search",
)


def _unit(item: pytest.Item) -> str:
    """What a worker is handed whole: a module's tests together, each benchmark's smoke run alone
    (a process of its own)."""
    module = Path(item.nodeid.split("::", 1)[0]).stem
    if module == "test_benchmarks":
        return str(item.callspec.params.get("name", module)) if hasattr(item, "callspec") else module
    return module


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # On pytest-xdist's workers (`--dist loadgroup`, as `make test` runs): a module's tests share a
    # worker, so the states its module-scoped fixtures build are built once.
    for item in items:
        if Path(item.nodeid.split("::", 1)[0]).stem != "test_benchmarks":
            item.add_marker(pytest.mark.xdist_group(_unit(item)))
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_unit(item), len(rank)))  # stable: the rest keep their order


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test marked both_engines runs once with the manifest in SQLite, once in PostgreSQL.
    if "engine" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_engines"):
        metafunc.parametrize("engine", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where this test's manifest lives: SQLite unless the test runs on both engines. The
    setting goes to the environment, so the processes a test starts use the same manifest."""
    name: str = getattr(request, "param", "sqlite")
    if name == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        monkeypatch.setenv("REVIEWLENS_DATABASE_URL", server.new_database())
    else:
        monkeypatch.delenv("REVIEWLENS_DATABASE_URL", raising=False)
    return name


@pytest.fixture
def layout(document_root: Path, tmp_path: Path, engine: str) -> Layout:
    # Under the document root, so Label Studio may serve this test's store.
    return Layout(document_root / tmp_path.name)


def crawl_config(shop: DemoShop, **overrides: object) -> CrawlConfig:
    # Politeness is measured in its own tests and benchmarks; elsewhere the local shop is fast.
    fast = {"backoff_s": 0.01, "api_rate": 200.0, "image_rate": 500.0}
    return from_mapping(CrawlConfig, {**shop.crawl_settings(), **fast, **overrides})


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory, document_root: Path) -> Iterator[LabelStudioServer]:
    """A real Label Studio server, started once for the whole test session."""
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"), document_root, port=free_port())
    creds = server.start()
    os.environ["LABEL_STUDIO_URL"] = server.url
    os.environ["LABEL_STUDIO_API_KEY"] = creds.token
    yield server
    server.stop()
