"""Where everything lies under one data folder; every stage agrees on these paths."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Where generated data, the photo store, the manifest and runs live unless told otherwise.
DEFAULT_DATA_DIR = Path(os.environ.get("REVIEWLENS_DATA_DIR", "data"))


def _setting(name: str) -> str | None:
    return os.environ.get(name) or None


def redacted(url: str) -> str:
    """The URL without its password, fit for a message or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


@dataclass(frozen=True)
class Layout:
    """Paths under one data folder, and where the manifest lives.

    The manifest is the folder's SQLite file unless `database_url` names a PostgreSQL database
    (postgresql://user:password@host:port/name, by default from REVIEWLENS_DATABASE_URL): then
    stages on several machines share it. It is left out of repr, as it may hold a password.
    Photos are in the folder's `store/` unless `store_url` names a shared store (core/store.py).
    Each setting is read when a layout is made, not at import: a worker started with it uses it.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = field(default_factory=lambda: _setting("REVIEWLENS_DATABASE_URL"), repr=False)
    store_url: str | None = field(default_factory=lambda: _setting("REVIEWLENS_STORE_URL"))
    store_endpoint: str | None = field(default_factory=lambda: _setting("REVIEWLENS_STORE_ENDPOINT"))

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "manifest.sqlite"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def production_dir(self) -> Path:
        return self.data_dir / "models" / "production"

    @property
    def cache_dir(self) -> Path:
        """Shrunk photos and frozen features: made again from the store when removed."""
        return self.data_dir / "cache"

    @property
    def index_dir(self) -> Path:
        """The product index of the production model: every usable photo's embedding."""
        return self.data_dir / "index"

    @property
    def services_dir(self) -> Path:
        """Pid files, logs and the logins of the services `up` and `ml-backend` run (mode 600)."""
        return self.data_dir / "services"

    @property
    def prefect_login(self) -> Path:
        """The login the Prefect server `up` starts asks of every API call (`user:secret`)."""
        return self.services_dir / "prefect-auth"

    @property
    def ml_backend_login(self) -> Path:
        """The login Label Studio sends the ML backend (`user:secret`)."""
        return self.services_dir / "ml-backend-login"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"
