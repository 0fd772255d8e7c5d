"""Where everything lies under one data folder; every stage agrees on these paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Where generated data, the photo store, the manifest and runs live unless told otherwise.
DEFAULT_DATA_DIR = Path(os.environ.get("REVIEWLENS_DATA_DIR", "data"))


@dataclass(frozen=True)
class Layout:
    """Paths under one data folder."""

    data_dir: Path = DEFAULT_DATA_DIR

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
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"
