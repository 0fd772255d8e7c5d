"""Shared fixtures: a small generated shop, its server, and one real Label Studio per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Prefect runs on its ephemeral local API, in a home of the test run's own that goes with it
# (`make test` also points HOME and the caches at a new folder).
if "PREFECT_HOME" not in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="reviewlens-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A busy 2-core machine can take longer than Prefect's default 20 s to start the ephemeral server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from core.layout import Layout
from core.settings import CrawlConfig, from_mapping
from reviewlens.demoshop.generate import GeneratorConfig, generate
from reviewlens.demoshop.server import DemoShop
from reviewlens.labelstudio_server import LabelStudioServer
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


@pytest.fixture
def shop(shop_dir: Path, tmp_path: Path) -> Iterator[DemoShop]:
    with DemoShop(shop_dir, request_log=tmp_path / "requests.jsonl") as running:
        yield running


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
