"""Frozen features, computed once per photo and kept: a retrain embeds only photos it has not seen.

A member's feature of a photo is the input of its final linear layer for the centre crop (the
mirror image would double the cost of the mode meant for a CPU; fine-tuning looks at it).
Features are stored per (member, preprocessing), where preprocessing names the input side, the
resize ratio and a digest of the body's weights, so a change to any of them starts a new store
instead of mixing features that do not compare. A store is a folder of
shards, each a raw float16 array and, written after it, the list of its photos' hashes: a shard
whose list is missing was cut short and is ignored.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.layout import Layout
from training.members import Member

VIEWS = 1  # the centre crop


def body_digest(model: nn.Module, head: str) -> str:
    """A digest of the weights every layer but the head holds: the features depend on these only."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith(head + "."):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureStore:
    """The features of one member under one preprocessing, by photo hash."""

    def __init__(self, root: Path, dim: int) -> None:
        self.root, self.dim = Path(root), dim
        self.row_bytes = VIEWS * dim * 2
        self.index: dict[str, tuple[Path, int]] = {}
        for listing in sorted(self.root.glob("*.sha")):
            shard = listing.with_suffix(".f16")
            for row, sha in enumerate(listing.read_text().split()):
                self.index[sha] = (shard, row)

    def missing(self, shas: list[str]) -> list[str]:
        return [s for s in dict.fromkeys(shas) if s not in self.index]

    def add(self, shas: list[str], features: np.ndarray) -> None:
        """Keeps (n, VIEWS, dim) features of `shas`; the list is written last, so a cut write leaves no entry."""
        if not shas:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{os.getpid()}"
        shard = self.root / f"{name}.f16"
        shard.write_bytes(np.ascontiguousarray(features, dtype=np.float16).tobytes())
        listing = self.root / f".{name}.sha"
        listing.write_text("\n".join(shas) + "\n")
        listing.replace(self.root / f"{name}.sha")
        for row, sha in enumerate(shas):
            self.index[sha] = (shard, row)

    def read(self, shas: list[str]) -> torch.Tensor:
        """(n, VIEWS, dim) float32 features of `shas`, read from disk as asked (never all held at once)."""
        out = np.empty((len(shas), VIEWS, self.dim), np.float16)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, sha in enumerate(shas):
            shard, row = self.index[sha]
            by_shard.setdefault(shard, []).append((row, i))
        for shard, rows in by_shard.items():
            with shard.open("rb") as f:
                for row, i in sorted(rows):
                    f.seek(row * self.row_bytes)
                    f.readinto(memoryview(out[i]).cast("B"))
        return torch.from_numpy(out).float()


def feature_dim(model: nn.Module, head: str) -> int:
    layer = model.get_submodule(head)
    assert isinstance(layer, nn.Linear)
    return layer.in_features


@torch.inference_mode()
def embed_batch(model: nn.Module, head: str, x: torch.Tensor) -> torch.Tensor:
    """(N, VIEWS, dim): the head's input for the batch."""
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(head).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return captured[0].float().unsqueeze(1)


def embed_missing(
    store: FeatureStore,
    shas: list[str],
    batches: Callable[[list[str]], Iterable[tuple[torch.Tensor, object]]],
    embed: Callable[[torch.Tensor], torch.Tensor],
    flush_every: int = 2048,
) -> int:
    """Embeds the photos of `shas` the store lacks; `batches(missing)` yields (uint8 batch, _) in order.

    Features are kept every `flush_every` photos, so a run killed midway keeps what it embedded.
    Returns how many photos were embedded.
    """
    todo = store.missing(shas)
    done, pending, pending_shas = 0, [], []
    for x, _ in batches(todo):
        feats = embed(x)
        pending.append(feats.half().cpu().numpy())
        pending_shas += todo[done : done + len(feats)]
        done += len(feats)
        if len(pending_shas) >= flush_every:
            store.add(pending_shas, np.concatenate(pending))
            pending, pending_shas = [], []
    store.add(pending_shas, np.concatenate(pending) if pending else np.empty((0, VIEWS, store.dim)))
    return done


class StoredRows:
    """Rows of a store as a lazy tensor of shape (n, *shape): `rows[index]` reads those rows
    from disk, so training over a shop's activations never holds them all."""

    def __init__(self, store: FeatureStore, shas: list[str], shape: tuple[int, ...]) -> None:
        self.store, self.shas, self.shape = store, shas, shape

    def __len__(self) -> int:
        return len(self.shas)

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        shas = self.shas[index] if isinstance(index, slice) else [self.shas[i] for i in index.tolist()]
        return self.store.read(shas).view(len(shas), *self.shape)


def feature_store(layout: Layout, member: Member, model: nn.Module, size: int, resize_ratio: float) -> FeatureStore:
    """The store of `model`'s features at this preprocessing; a different body or input gets another."""
    key = f"{size}px-r{resize_ratio:g}-{body_digest(model, member.head)}"
    return FeatureStore(layout.cache_dir / "features" / member.name / key, feature_dim(model, member.head))


def activation_store(
    layout: Layout,
    member: Member,
    model: nn.Module,
    size: int,
    resize_ratio: float,
    top_blocks: int,
    shape: tuple[int, ...],
) -> FeatureStore:
    """The store of the inputs of `model`'s last `top_blocks` blocks (top mode), each row one photo's
    activation map of `shape`. Keyed by the weights the model starts from: the blocks below the top
    never learn, so a retrain finds here every photo it has seen."""
    key = f"{size}px-r{resize_ratio:g}-top{top_blocks}-{body_digest(model, member.head)}"
    return FeatureStore(layout.cache_dir / "activations" / member.name / key, math.prod(shape))


def view_store(store: FeatureStore, view: int) -> FeatureStore:
    """Beside an activation store, the one of its photos' augmented `view` (1, 2, ...)."""
    return FeatureStore(store.root.with_name(f"{store.root.name}-view{view}"), store.dim)
