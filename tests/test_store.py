"""The photo store shared on object storage: a real S3-compatible server (moto's server mode)."""

from __future__ import annotations

import hashlib
import io
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import DedupeConfig
from core.store import SharedStore, localise
from crawler.crawl import crawl
from crawler.store import PhotoStore
from curation.dedupe.grouping import dedupe
from demo.shop.server import DemoShop
from tests.conftest import crawl_config
from tests.db import run
from tests.procs import ROOT
from tests.s3 import S3Server
from training.data import make_snapshot


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def shared(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket, and the settings that make every layout of the test use it."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "reviewlens-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    url = f"s3://{s3.bucket()}/store"
    monkeypatch.setenv("REVIEWLENS_STORE_URL", url)
    monkeypatch.setenv("REVIEWLENS_STORE_ENDPOINT", s3.endpoint)
    return url


def _groups(layout: Layout) -> set[frozenset[str]]:
    """The duplicate groups, as sets of photos (which one is kept follows when each was stored)."""
    groups: dict[str, set[str]] = {}
    with open_manifest(layout) as m:
        for sha, group in run(m, "SELECT sha256, group_id FROM curation WHERE status = 'ok'").fetchall():
            groups.setdefault(group, set()).add(sha)
    return {frozenset(members) for members in groups.values()}


def test_a_machine_without_a_copy_reads_every_photo_from_the_shared_store(
    shared: str, shop: DemoShop, layout: Layout, s3: S3Server, tmp_path: Path
) -> None:
    assert layout.store_url == shared
    crawl(crawl_config(shop), layout)
    store = SharedStore(shared, s3.endpoint)
    local = sorted(str(p.relative_to(layout.store_dir)) for p in layout.store_dir.rglob("*.*") if p.is_file())
    assert store.names() == local and len(local) > 100
    for rel in local[:20]:  # content-addressed: each object hashes to its name
        assert hashlib.sha256(store.get(rel)).hexdigest() == Path(rel).stem

    # This machine loses its copy: dedupe and the training data read the shared store instead.
    shutil.rmtree(layout.store_dir)
    dedupe(DedupeConfig(), layout)
    reference = Layout(tmp_path / "local-only", database_url=None, store_url=None)
    crawl(crawl_config(shop), reference)
    dedupe(DedupeConfig(), reference)
    assert _groups(layout) == _groups(reference) and len(_groups(layout)) < len(local)

    with open_manifest(layout) as m:
        run(
            m,
            "INSERT INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
            "SELECT sha256, 1, ROW_NUMBER() OVER (ORDER BY sha256), ?, 'accept', ? FROM curation WHERE is_kept = 1",
            (utc_now(), utc_now()),
        )
    kept = [r for r in layout.store_dir.rglob("*.*")]
    for path in kept[: len(kept) // 2]:
        path.unlink()  # half the copies gone again: the training data fetches them
    snapshot = make_snapshot(layout, val_share=0.2, test_share=0.2, seed=0, min_photos=5)
    assert snapshot.examples
    with open_manifest(layout) as m:
        assert run(m, "SELECT COUNT(*) FROM failures").fetchone()[0] == 0
    for example in snapshot.examples:
        assert hashlib.sha256((layout.store_dir / example.path).read_bytes()).hexdigest() == example.sha256
    assert localise(layout, [example.path for example in snapshot.examples]) == 0  # all here now


class _StallingRelay:
    """Passes a client's bytes to `upstream` until `limit` of them went through, then holds the
    rest: the client is left mid-upload, where the test kills it."""

    def __init__(self, upstream_port: int, limit: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_port, self.limit = upstream_port, limit
        self.stalled = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upload: bool) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if upload and sent + len(data) > self.limit:
                    target.sendall(data[: self.limit - sent])
                    self.stalled.set()
                    while source.recv(65536):  # the rest never reaches the server
                        pass
                    break
                target.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (source, target):
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_writer_killed_mid_upload_leaves_no_partial_object(shared: str, s3: S3Server) -> None:
    relay = _StallingRelay(s3.port, limit=300_000)
    writer = (
        "import sys; from core.store import SharedStore; "
        f"SharedStore({shared!r}, 'http://127.0.0.1:{relay.port}').put('ab/' + 'a' * 64 + '.jpg', b'x' * 2_000_000)"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=ROOT)
    try:
        assert relay.stalled.wait(60), "the upload never reached the server"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        relay.close()
    store = SharedStore(shared, s3.endpoint)
    assert not store.has("ab/" + "a" * 64 + ".jpg")
    assert store.names() == []


def test_a_shared_file_system_store_is_written_whole_and_read_back(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    layout = Layout(tmp_path / "data", database_url=None, store_url=f"file://{shared}")
    store = PhotoStore(layout.store_dir, shared=SharedStore(f"file://{shared}"))
    image = io.BytesIO()
    Image.new("RGB", (40, 30), "teal").save(image, "JPEG")
    stored = store.put(image.getvalue())
    assert (shared / stored.path).read_bytes() == image.getvalue()
    assert not list(shared.rglob(".tmp-*"))
    (layout.store_dir / stored.path).unlink()  # this machine's copy gone: fetched back from the share
    assert localise(layout, [stored.path]) == 1
    assert (layout.store_dir / stored.path).read_bytes() == image.getvalue()
