"""Every photo of every product as a vector, searchable by nearest neighbour (faiss).

Keyed by photo content hash (a view cut to a person's box by the hash and the box), so adding
photos embeds only the new ones, and stamped with the model version whose embedding made it:
vectors of another model do not compare. Below
`approximate_from` vectors the search is exact (a flat inner-product scan). From there on it is
an inverted file (IVF, Jégou et al. 2011): the vectors are clustered into about 4·sqrt(n) lists
and a query scans the `probe` lists nearest to it, which tests/benchmarks/index_scale.py
measures against exact search. The index is rebuilt from the kept vectors when it crosses that
size, and saved by writing a new folder and renaming it over the old, so a killed save leaves the
previous index whole.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from core.errors import ReviewlensError

APPROXIMATE_FROM = 100_000
# Lists scanned per query: at 1M photos, 12 of 4,000 ran at 25x exact search with recall@10
# 0.965 in tests/benchmarks/index_scale.py (24: 13.6x, 0.974; 4: 65x, 0.950).
PROBE = 12


class IndexMismatch(ReviewlensError):
    """An index made by another model, or a folder that holds no index."""


@dataclass(frozen=True)
class Entry:
    key: str  # the photo's content hash; with '#' and a box for a view cut to a person's box
    product_id: str


class ProductIndex:
    """Unit vectors of photos, each with the product it shows; cosine similarity by inner product."""

    def __init__(
        self, dim: int, model_version: str, approximate_from: int = APPROXIMATE_FROM, probe: int = PROBE
    ) -> None:
        self.dim, self.model_version = dim, model_version
        self.approximate_from, self.probe = approximate_from, probe
        self.entries: list[Entry] = []
        self.vectors: np.ndarray = np.empty((0, dim), np.float32)
        self._faiss: faiss.Index = faiss.IndexFlatIP(dim)
        self._known: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def approximate(self) -> bool:
        return not isinstance(self._faiss, faiss.IndexFlatIP)

    def has(self, key: str) -> bool:
        return key in self._known

    def add(self, entries: list[Entry], vectors: np.ndarray) -> int:
        """Adds the entries not yet in the index; returns how many were new."""
        new = [i for i, e in enumerate(entries) if e.key not in self._known]
        if not new:
            return 0
        rows = np.ascontiguousarray(vectors[new], dtype=np.float32)
        if rows.shape[1] != self.dim:
            raise IndexMismatch(f"vectors of width {rows.shape[1]} do not fit an index of width {self.dim}")
        crossing = not self.approximate and len(self) + len(new) >= self.approximate_from
        self.entries += [entries[i] for i in new]
        self._known.update(entries[i].key for i in new)
        self.vectors = np.concatenate([self.vectors, rows])
        if crossing:
            self._faiss = self._build_ivf()
        else:
            self._faiss.add(rows)
        return len(new)

    def _build_ivf(self) -> faiss.Index:
        lists = max(1, int(4 * math.sqrt(len(self.vectors))))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, lists, faiss.METRIC_INNER_PRODUCT)
        # k-means on a sample: faiss's own advice is 39 to 256 points per list.
        sample = self.vectors[np.random.default_rng(0).permutation(len(self.vectors))[: lists * 64]]
        ivf.train(sample)
        ivf.add(self.vectors)
        ivf.nprobe = self.probe
        return ivf

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, entry rows) of each query's `k` nearest photos; rows of -1 where fewer exist."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not len(self):
            return np.full((len(queries), k), -1.0, np.float32), np.full((len(queries), k), -1, np.int64)
        similarity, rows = self._faiss.search(queries, min(k, len(self)))
        if rows.shape[1] < k:
            pad = k - rows.shape[1]
            similarity = np.pad(similarity, ((0, 0), (0, pad)), constant_values=-1.0)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        return similarity, rows

    def save(self, folder: Path) -> None:
        """Writes the index to `folder` whole or not at all."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        np.save(building / "vectors.npy", self.vectors)
        (building / "entries.tsv").write_text("".join(f"{e.key}\t{e.product_id}\n" for e in self.entries))
        meta = {"dim": self.dim, "model_version": self.model_version, "approximate_from": self.approximate_from}
        (building / "index.json").write_text(json.dumps({**meta, "probe": self.probe, "photos": len(self)}))
        old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        building.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> ProductIndex:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "index.json").read_text())
            vectors = np.load(folder / "vectors.npy")
            lines = (folder / "entries.tsv").read_text().splitlines()
        except (OSError, ValueError, KeyError) as exc:
            raise IndexMismatch(f"no readable product index at {folder} ({exc}): run `reviewlens index`") from exc
        index = cls(int(meta["dim"]), str(meta["model_version"]), int(meta["approximate_from"]), int(meta["probe"]))
        entries = [Entry(*line.split("\t")) for line in lines]
        if len(entries) != len(vectors):
            raise IndexMismatch(f"the product index at {folder} is damaged: run `reviewlens index --rebuild`")
        index.add(entries, vectors)
        return index
