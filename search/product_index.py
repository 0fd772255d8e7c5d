"""Every photo of every product as a vector, searchable by nearest neighbour (faiss).

Keyed by photo content hash (a view cut to a person's box by the hash and the box), so adding
photos embeds only the new ones, and stamped with the model version whose embedding made it:
vectors of another model do not compare. Below
`approximate_from` vectors the search is exact (a flat inner-product scan). From there on it is
an inverted file (IVF, Jégou et al. 2011): the vectors are clustered into lists (4·sqrt of the
size the index is expected to reach, below) and a query scans the `probe` lists nearest to it,
which tests/benchmarks/index_scale.py measures against exact search. The index is rebuilt from
the kept vectors when it crosses that size, and again as it grows (REGROW). Saves append
(ProductIndex's docstring), so a killed save leaves the previous index whole.
"""

from __future__ import annotations

import gc
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
REGROW = 4  # the approximate index is clustered again each time it has grown this many times over
# Lists scanned per query: at 1M photos, 12 of 5,656 ran at 37x to 45x exact search with recall@10
# 0.990 in tests/benchmarks/index_scale.py (24: 21.6x, 0.992; 4: 64x, 0.985).
PROBE = 12


def ivf_lists(size: int) -> int:
    """Lists for an index clustered at `size`: 4·sqrt(n), the usual choice, for the n it holds
    halfway (geometrically) to its next clustering, REGROW times larger. Sized for `size` itself,
    an index built batch by batch to 1M was searched on lists clustered at 524,288 (2,896 of them)
    and found 0.926 of the exact top 10, against 0.965 with 4,000; lists fewer than the index's
    growth calls for were not made up by scanning more of them (24 found 0.945). Sized so, it
    clusters 4,096 lists at 524,288 and finds 0.968."""
    return max(1, int(4 * math.sqrt(size * math.sqrt(REGROW))))


class IndexMismatch(ReviewlensError):
    """An index made by another model, or a folder that holds no index."""


CATALOG = "catalog"  # the third column of a shard's line for a catalog photo


@dataclass(frozen=True)
class Entry:
    key: str  # the photo's content hash; with '#' and a box for a view cut to a person's box
    product_id: str
    catalog: bool = False  # the shop's own photo of the product, not a customer's

    def line(self) -> str:
        return f"{self.key}\t{self.product_id}\t{CATALOG}\n" if self.catalog else f"{self.key}\t{self.product_id}\n"

    @classmethod
    def of_line(cls, line: str) -> Entry:
        key, product_id, *kind = line.split("\t")
        return cls(key, product_id, kind == [CATALOG])


class ProductIndex:
    """Unit vectors of photos, each with the product it shows; cosine similarity by inner product.

    On disk a folder of shards, each the vectors and entries one save added, an approximate index
    in faiss's own format, and index.json, written last, naming what is whole. A save writes only
    what is new (and the approximate index, when asked), so an index grows at a cost linear in its
    size, and a load reads the approximate index back instead of clustering again.
    """

    def __init__(
        self, dim: int, model_version: str, approximate_from: int = APPROXIMATE_FROM, probe: int = PROBE
    ) -> None:
        self.dim, self.model_version = dim, model_version
        self.approximate_from, self.probe = approximate_from, probe
        self.entries: list[Entry] = []
        self._chunks: list[np.ndarray] = []  # the vectors, in the order added
        self._faiss: faiss.Index = faiss.IndexFlatIP(dim)
        self._known: set[str] = set()
        self._catalog_rows: list[int] = []  # the rows of catalog photos, searched apart (search_catalog)
        # Those rows as an array and their vectors, gathered at the first search after an add.
        self._catalog: tuple[np.ndarray, np.ndarray] | None = None
        # What `folder` holds already: its shards, and the rows the approximate index file covers.
        self._folder: Path | None = None
        self._shards: list[str] = []
        self._saved_rows = 0
        self._faiss_file: str | None = None
        self._faiss_rows = 0
        self._clustered_at = 0  # the size at which the approximate index was last clustered

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def vectors(self) -> np.ndarray:
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks else np.empty((0, self.dim), np.float32)]
        return self._chunks[0]

    def _rows_from(self, start: int) -> np.ndarray:
        """The vectors from row `start` on, gathered from the last chunks only: a save after each
        batch copies that batch, not the whole index (which made building it quadratic)."""
        parts, end = [], len(self)
        for chunk in reversed(self._chunks):
            if end <= start:
                break
            parts.append(chunk[max(0, start - (end - len(chunk))) :])
            end -= len(chunk)
        parts.reverse()
        if not parts:
            return np.empty((0, self.dim), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of `rows` (ascending), read from each chunk where they lie: a loaded index's
        chunks are mapped files, which joining into one array would read whole."""
        parts, start = [], 0
        for chunk in self._chunks:
            inside = rows[(rows >= start) & (rows < start + len(chunk))]
            parts.append(np.asarray(chunk[inside - start], dtype=np.float32))
            start += len(chunk)
        return np.ascontiguousarray(np.concatenate(parts)) if parts else np.empty((0, self.dim), np.float32)

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
        # Clustered once it crosses its size, and again each time it has grown fourfold, so the
        # lists stay about 4·sqrt(n) at a cost, summed over the index's life, linear in its size.
        crossing = len(self) + len(new) >= max(self.approximate_from, REGROW * self._clustered_at)
        self._catalog_rows += [len(self) + n for n, i in enumerate(new) if entries[i].catalog]
        self._catalog = None
        self.entries += [entries[i] for i in new]
        self._known.update(entries[i].key for i in new)
        self._chunks.append(rows)
        if crossing:
            self._faiss = self._build_ivf()
            self._faiss_file = None  # the file on disk, if any, is the flat index's past
        else:
            self._faiss.add(rows)
        return len(new)

    def _build_ivf(self) -> faiss.Index:
        self._clustered_at = len(self)
        lists = ivf_lists(len(self))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, lists, faiss.METRIC_INNER_PRODUCT)
        # k-means on a sample: faiss's own advice is 39 to 256 points per list.
        vectors = self.vectors
        sample = vectors[np.random.default_rng(0).permutation(len(vectors))[: lists * 64]]
        ivf.train(sample)
        ivf.add(vectors)
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

    def search_catalog(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """As `search`, among the catalog photos alone, exactly: a shop has one or a few a product,
        and a customer's photo is nearer other customers' photos than any catalog photo, so their
        nearest in the whole index may hold none (search/finder.py)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rows, vectors = self._catalog_photos()
        similarity = queries @ vectors.T
        k = min(k, len(rows))
        if k < len(rows):  # the k best, unordered, before ordering only them
            near = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            similarity, rows = np.take_along_axis(similarity, near, 1), rows[near]
        else:
            rows = np.broadcast_to(rows, similarity.shape)
        order = np.argsort(-similarity, axis=1, kind="stable")
        return np.take_along_axis(similarity, order, 1), np.take_along_axis(rows, order, 1)

    def is_catalog(self, rows: np.ndarray) -> np.ndarray:
        """Which of `rows` (entry rows, -1 for none) are catalog photos."""
        return np.isin(rows, self._catalog_photos()[0])

    def _catalog_photos(self) -> tuple[np.ndarray, np.ndarray]:
        if self._catalog is None:
            rows = np.asarray(self._catalog_rows, dtype=np.int64)
            self._catalog = rows, self.gather(rows)
        return self._catalog

    @property
    def catalog_photos(self) -> int:
        return len(self._catalog_rows)

    def save(self, folder: Path, approximate_index: bool = True) -> None:
        """Writes what `folder` lacks, then index.json: a killed save leaves the index as it was.

        `approximate_index=False` leaves the approximate index's file as it is (a load adds the
        rows it lacks): a run that saves after each batch writes that file once, at its end."""
        folder = Path(folder)
        if self._folder is None or self._folder.resolve() != folder.resolve() or not folder.is_dir():
            self._save_anew(folder)
            return
        self._append_shard(folder)
        if approximate_index:
            self._write_faiss(folder)
        self._write_meta(folder)
        for stale in folder.glob("faiss-*.index"):
            if stale.name != self._faiss_file:
                stale.unlink(missing_ok=True)

    def _save_anew(self, folder: Path) -> None:
        """The whole index into a new folder, renamed over the old one."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        (building / "shards").mkdir(parents=True)
        self._shards, self._saved_rows, self._faiss_file, self._faiss_rows = [], 0, None, 0
        self._append_shard(building)
        self._write_faiss(building)
        self._write_meta(building)
        old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        building.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        self._folder = folder

    def _append_shard(self, folder: Path) -> None:
        if self._saved_rows == len(self):
            return
        name = f"{len(self._shards):06d}"
        np.save(folder / "shards" / f"{name}.npy", self._rows_from(self._saved_rows))
        lines = "".join(e.line() for e in self.entries[self._saved_rows :])
        (folder / "shards" / f"{name}.tsv").write_text(lines)
        self._shards.append(name)
        self._saved_rows = len(self)

    def _write_faiss(self, folder: Path) -> None:
        if not self.approximate or (self._faiss_file and self._faiss_rows == len(self)):
            return
        name = f"faiss-{len(self)}.index"
        faiss.write_index(self._faiss, str(folder / f".{name}"))
        (folder / f".{name}").replace(folder / name)
        self._faiss_file, self._faiss_rows = name, len(self)

    def _write_meta(self, folder: Path) -> None:
        meta = {
            "dim": self.dim,
            "model_version": self.model_version,
            "approximate_from": self.approximate_from,
            "probe": self.probe,
            "photos": len(self),
            "shards": self._shards,
            "faiss": self._faiss_file,
            "faiss_rows": self._faiss_rows,
            "clustered_at": self._clustered_at,
        }
        (folder / ".index.json").write_text(json.dumps(meta))
        (folder / ".index.json").replace(folder / "index.json")

    @classmethod
    def load(cls, folder: Path) -> ProductIndex:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "index.json").read_text())
            # Mapped, not read: the approximate index holds its own copy of the vectors, and a load
            # reads only the rows saved after it.
            shards = [
                (
                    np.load(folder / "shards" / f"{s}.npy", mmap_mode="r"),
                    (folder / "shards" / f"{s}.tsv").read_text().splitlines(),
                )
                for s in meta["shards"]
            ]
        except (OSError, ValueError, KeyError) as exc:
            raise IndexMismatch(f"no readable product index at {folder} ({exc}): run `reviewlens index`") from exc
        index = cls(int(meta["dim"]), str(meta["model_version"]), int(meta["approximate_from"]), int(meta["probe"]))
        # A million entries are a million new objects, none in a cycle: the cyclic collector would
        # walk them all again and again as they are made (two thirds of a load's time at 1M).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for vectors, lines in shards:
                if len(lines) != len(vectors):
                    raise IndexMismatch(f"the product index at {folder} is damaged: run `reviewlens index --rebuild`")
                index.entries += [Entry.of_line(line) for line in lines]
                index._chunks.append(vectors)
            index._known = {e.key for e in index.entries}
            index._catalog_rows = [row for row, e in enumerate(index.entries) if e.catalog]
        finally:
            if collecting:
                gc.enable()
        index._folder, index._shards, index._saved_rows = folder, list(meta["shards"]), len(index)
        if meta.get("faiss"):  # the approximate index as saved, and the rows saved after it
            try:
                index._faiss = faiss.read_index(str(folder / meta["faiss"]))
            except RuntimeError as exc:
                raise IndexMismatch(
                    f"the product index at {folder} is damaged ({exc}): run `reviewlens index --rebuild`"
                ) from exc
            faiss.extract_index_ivf(index._faiss).nprobe = index.probe
            index._faiss_file, index._faiss_rows = meta["faiss"], int(meta["faiss_rows"])
            index._clustered_at = int(meta.get("clustered_at", index._faiss_rows))
            index._faiss.add(np.ascontiguousarray(index._rows_from(index._faiss_rows), dtype=np.float32))
        elif len(index) >= index.approximate_from:
            index._faiss = index._build_ivf()
        elif len(index):
            index._faiss.add(np.ascontiguousarray(index.vectors, dtype=np.float32))
        return index
