"""The index stage: every usable photo of every product embedded with the production model, or,
before any model is trained, with the members' pretrained bodies (training/pretrained.py).

Beside each whole photo, the index holds the view cut to the box a person drew around its one
product (training/data.py's box views): the object search looks for products in cuts of a
photo, and a photo refused only because its product is small in it shows the product there.

The shop's own photo of each product (a crawled or imported catalog photo) is marked as one: the
Finder searches those apart and puts their similarity in customer photos' terms, so that a
product known only by its catalog photo is not lost among other products' customer photos. An
index built before the mark holds its catalog photos as customers'; `--rebuild` marks them.

A product becomes findable as soon as its photos are in the index, with no retrain: each run
embeds only the photos the index lacks (their features come from the feature cache when
training already computed them). An index made by another model is started again, as its
vectors do not compare with the new model's.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import queries as q
from core.boxes import VIEW_MARK, view_key
from core.errors import ReviewlensError
from core.layout import Layout
from core.manifest import open_manifest
from core.photos import find_damaged
from core.settings import TrainConfig
from search.catalog_map import index_catalog_map
from search.product_index import APPROXIMATE_FROM, Entry, IndexMismatch, ProductIndex
from training import pretrained
from training.bundle import Ensemble
from training.data import box_views
from training.groups import source_key
from training.loading import PhotoRef

BATCH = 2048  # photos embedded, added and saved (appended as a shard) at a time
# Embeds batches of photos: one array of search vectors per batch, in the batches' order.
Embedder = Callable[[list[list[PhotoRef]]], Iterable[np.ndarray]]


class NoEmbedding(ReviewlensError):
    """A model trained before the search embedding existed."""


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    url: str
    photo: str = ""  # the store path of one of its photos, to show beside its name


@dataclass(frozen=True)
class IndexSummary:
    photos: int  # entries: whole photos, and views cut to a person's box
    views: int  # of them, views cut to a person's box
    catalog: int  # of them, the shop's own photos of its products (searched apart: search/finder.py)
    added: int
    left_out: int  # photos whose file is missing or changed
    products: int
    model_version: str
    approximate: bool
    seconds: float


def index_folder(layout: Layout) -> Path:
    return layout.index_dir / "products"


def embed_here(ensemble: Ensemble, layout: Layout, photos: list[PhotoRef]) -> np.ndarray:
    """The search vectors of `photos`, computed by this process (through the feature cache)."""
    if ensemble.embedding is None:
        raise NoEmbedding(f"model {ensemble.version} has no search embedding: train again with `reviewlens train`")
    vectors: np.ndarray = ensemble.embedding(ensemble.photo_features(photos, layout)).numpy()
    return vectors


def update_index(
    layout: Layout,
    ensemble: Ensemble,
    rebuild: bool = False,
    approximate_from: int = APPROXIMATE_FROM,
    embed: Embedder | None = None,
    batch_size: int = BATCH,
) -> IndexSummary:
    """Adds every indexable photo the index lacks; returns what the index holds now.

    The photos are embedded batch after batch by this process, or by `embed`, which a flow hands
    in to embed the batches on a cluster (flows/dask.py); each batch is appended to the saved
    index as it comes, and the approximate index is written once, at the end.
    """
    return _update(layout, ensemble, rebuild, approximate_from, embed, batch_size)[1]


def _update(
    layout: Layout,
    ensemble: Ensemble,
    rebuild: bool,
    approximate_from: int,
    embed: Embedder | None = None,
    batch_size: int = BATCH,
) -> tuple[ProductIndex, IndexSummary]:
    """`update_index`, which also hands back the index it saved (for the catalog map's fit)."""
    started = time.monotonic()
    if ensemble.embedding is None:
        raise NoEmbedding(f"model {ensemble.version} has no search embedding: train again with `reviewlens train`")
    folder = index_folder(layout)
    index = None
    if not rebuild and (folder / "index.json").exists():
        index = ProductIndex.load(folder)
        if index.model_version != ensemble.version:
            index = None  # another model's vectors: start again
    if index is None:
        index = ProductIndex(ensemble.embedding.dim, ensemble.version, approximate_from)
    with open_manifest(layout) as manifest:
        rows = manifest.rows(q.INDEXABLE_PHOTOS)
        boxed = manifest.rows(q.BOXED_PHOTOS)
        views = box_views(boxed)
        # A photo whose file went missing or changed is left out (and fetched again by the next
        # crawl), rather than stopping the run or being found under a wrong product.
        damaged = find_damaged(
            manifest,
            layout,
            [r for r in rows if not index.has(r["sha256"])]
            + [r for r in boxed if r["sha256"] in views and not index.has(view_key(r["sha256"], views[r["sha256"]]))],
        )
    rows = [r for r in rows if r["sha256"] not in damaged]
    boxed = [r for r in boxed if r["sha256"] in views and r["sha256"] not in damaged]
    products = {r["product_id"]: Product(r["product_id"], r["name"], r["url"], r["path"]) for r in boxed + rows}
    items = [(PhotoRef(layout.store_dir / r["path"], r["sha256"]), r["product_id"]) for r in rows]
    items += [(PhotoRef(layout.store_dir / r["path"], r["sha256"], views[r["sha256"]]), r["product_id"]) for r in boxed]
    todo = [(ref, product) for ref, product in items if not index.has(str(ref.key))]
    catalog = {r["sha256"] for r in rows if r["catalog"]}  # whole photos: a view's key names its box too
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    refs = [[ref for ref, _ in batch] for batch in batches]
    embedded = embed(refs) if embed else (embed_here(ensemble, layout, photos) for photos in refs)
    for n, (batch, vectors) in enumerate(zip(batches, embedded, strict=True)):
        index.add([Entry(str(ref.key), product, str(ref.key) in catalog) for ref, product in batch], vectors)
        # Only the batch's vectors are written: a killed run keeps what it indexed.
        index.save(folder, approximate_index=False)
        if n == 0:  # every product of the run is known from the start: their list is written once
            save_products(folder, products)
    index.save(folder)  # the approximate index, once a run
    save_products(folder, products)
    return index, IndexSummary(
        len(index),
        sum(VIEW_MARK in e.key for e in index.entries),
        index.catalog_photos,
        len(todo),
        len(damaged),
        len(products),
        index.model_version,
        index.approximate,
        time.monotonic() - started,
    )


def save_products(folder: Path, products: dict[str, Product]) -> None:
    (folder / ".products.json").write_text(json.dumps({k: vars(p) for k, p in products.items()}))
    (folder / ".products.json").replace(folder / "products.json")


def pretrained_file(layout: Layout) -> Path:
    return layout.index_dir / "pretrained.pt"


def load_pretrained(layout: Layout) -> Ensemble | None:
    """The pretrained ensemble the index was built with before any training; None where there is none."""
    file = pretrained_file(layout)
    if not file.exists():
        return None
    try:
        return pretrained.from_state(torch.load(file, map_location="cpu", weights_only=True))
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as exc:
        raise IndexMismatch(f"{file} is unreadable or stale ({exc}): run `reviewlens index --rebuild`") from exc


def update_pretrained_index(
    layout: Layout, config: TrainConfig, rebuild: bool = False, approximate_from: int = APPROXIMATE_FROM
) -> IndexSummary:
    """The index stage with no trained model: the members' pretrained bodies, kept beside the
    index (which bodies, at which side, and the catalog photos' map fitted on the index:
    search/catalog_map.py), so `predict` and `serve` load the same ones."""
    ensemble = pretrained.pretrained_ensemble(config)
    assert ensemble.embedding is not None
    file = pretrained_file(layout)
    file.parent.mkdir(parents=True, exist_ok=True)
    saved = _saved_state(file)
    if isinstance(saved, dict) and saved.get("version") == ensemble.version:  # their map, until fitted anew
        ensemble.embedding.catalog_scale, ensemble.embedding.catalog_shift = saved.get("catalog_map", (1.0, 0.0))
    _save_state(file, saved, pretrained.state(ensemble))  # before the index grows: a killed run leaves them named
    index, summary = _update(layout, ensemble, rebuild, approximate_from)
    with open_manifest(layout) as manifest:
        sources = {
            r["sha256"]: source_key(r["shop"], r["product_id"], r["review_id"]) for r in manifest.rows(q.SPLIT_LINKS)
        }
    fitted = index_catalog_map(index, sources)
    ensemble.embedding.catalog_scale, ensemble.embedding.catalog_shift = fitted
    _save_state(file, _saved_state(file), pretrained.state(ensemble))
    return summary


def _save_state(file: Path, saved: object, state: dict[str, Any]) -> None:
    # Written only when it changes: the ML backend loads the bodies again when this file changes.
    if saved != state:
        torch.save(state, file.with_suffix(".tmp"))
        file.with_suffix(".tmp").replace(file)


def _saved_state(file: Path) -> object:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, pickle.UnpicklingError, RuntimeError, EOFError):  # absent or unreadable: written again
        return None


def load_index(layout: Layout, ensemble: Ensemble) -> tuple[ProductIndex, dict[str, Product]] | None:
    """The index of `ensemble`'s model and its products; None where there is none for this model."""
    folder = index_folder(layout)
    if not (folder / "index.json").exists():
        return None
    index = ProductIndex.load(folder)
    if index.model_version != ensemble.version:
        return None
    try:
        products = {k: Product(**v) for k, v in json.loads((folder / "products.json").read_text()).items()}
    except (OSError, ValueError, TypeError) as exc:
        raise IndexMismatch(f"the product list beside {folder} is unreadable ({exc}): run `reviewlens index`") from exc
    return index, products
