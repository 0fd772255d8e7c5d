"""The photo store's shared copy on object storage, for stages on several machines.

By default the store is the data folder's `store/` and nothing here is used. When the layout names
a store URL (REVIEWLENS_STORE_URL: `s3://bucket/prefix` with REVIEWLENS_STORE_ENDPOINT for an
S3-compatible server, or `file:///shared/folder`), that URL, read through fsspec, holds every
photo under the same content-addressed names, and each machine's `store/` is its local copy of
the photos it has read: the crawl writes both, and a stage that reads photos first fetches what
its machine lacks (`localise`).

A photo is written whole or not at all on either kind: one PUT on object storage (the server
never shows a partial body as an object), a temporary file renamed into place on a file system.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from core.errors import ReviewlensError
from core.layout import Layout

FETCH_THREADS = 8


class StoreUnreachable(ReviewlensError):
    """The store's URL cannot be read or written."""


class SharedStore:
    """The store at an fsspec URL: `has`, `put` and `get` by the path relative to its root."""

    def __init__(self, url: str, endpoint: str | None = None) -> None:
        import fsspec  # only where a shared store is configured

        options: dict[str, Any] = {}
        if url.startswith("s3://") and endpoint:
            options["endpoint_url"] = endpoint
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as exc:
            raise StoreUnreachable(f"the photo store URL {url!r} cannot be used: {exc}") from exc
        self.url = url
        self.root = root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols  # a file system, shared or not: renamed into place

    def _key(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def has(self, rel: str) -> bool:
        return bool(self.fs.exists(self._key(rel)))

    def put(self, rel: str, data: bytes) -> None:
        key = self._key(rel)
        if not self.local:
            self.fs.pipe_file(key, data)
            return
        # A shared file system: beside its final place, then renamed, as the local store does.
        self.fs.makedirs(os.path.dirname(key), exist_ok=True)
        tmp = f"{os.path.dirname(key)}/.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, key)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise

    def get(self, rel: str) -> bytes:
        data: bytes = self.fs.cat_file(self._key(rel))
        return data

    def names(self) -> list[str]:
        """Every photo's path under the root (temporary files of a shared file system left out)."""
        found = self.fs.find(self.root)
        return sorted(p[len(self.root) + 1 :] for p in found if "/.tmp-" not in p)


def shared_store(layout: Layout) -> SharedStore | None:
    """The layout's shared store, or None where the data folder's own store is the only one."""
    if not layout.store_url:
        return None
    return SharedStore(layout.store_url, layout.store_endpoint)


def write_atomically(path: Path, data: bytes) -> None:
    """Writes `data` beside `path`, flushed to disk, then renamed into place: a killed process
    leaves the whole file or a temporary `.tmp-` one that the crawl sweeps, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def localise(layout: Layout, rels: Iterable[str]) -> int:
    """Fetches from the shared store the photos this machine's store lacks; returns how many.

    A photo missing from the shared store too stays missing: the caller finds it damaged and
    the next crawl fetches it again.
    """
    shared = shared_store(layout)
    if shared is None:
        return 0
    missing = sorted({rel for rel in rels if not (layout.store_dir / rel).exists()})

    def fetch(rel: str) -> int:
        try:
            data = shared.get(rel)
        except FileNotFoundError:
            return 0
        write_atomically(layout.store_dir / rel, data)
        return 1

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        return sum(pool.map(fetch, missing))
