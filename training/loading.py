"""What the loader's workers do: read a cached photo, cut it to a fixed square, hand over uint8.

Workers decode and crop, the cheap part that needs no model; scaling to float, the random
resized crop, flips, colour and normalization happen batched on the model's device
(training/augment.py), so a GPU is not kept waiting on per-photo float work in Python.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.boxes import crop, parse_box, view_key
from training.data import load_image
from training.photo_cache import PhotoCache, shrink


@dataclass(frozen=True)
class PhotoRef:
    """A photo to read: its file, its content hash when it is in the store (so it can be cached),
    and the box it is cut to when it is a view of the photo ('left,top,right,bottom')."""

    path: Path
    sha256: str | None = None
    box: str = ""

    @property
    def key(self) -> str | None:
        return None if self.sha256 is None else view_key(self.sha256, self.box)


def to_uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def centre_square(img: Image.Image, side: int) -> Image.Image:
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def fit_short_side(img: Image.Image, side: int) -> Image.Image:
    """`img` with its short side at `side`: shrunk, or enlarged when smaller than the input."""
    img = shrink(img, side)
    if min(img.size) < side:
        scale = side / min(img.size)
        img = img.resize((max(side, round(img.width * scale)), max(side, round(img.height * scale))))
    return img


def eval_square(img: Image.Image, resize: int, crop: int) -> torch.Tensor:
    """The uint8 square a model answers on: the centre `crop` of `img` at short side `resize`."""
    return to_uint8(centre_square(fit_short_side(img, resize), crop))


class Photos(Dataset[tuple[torch.Tensor, int]]):
    """Photos as uint8 squares: the centre `crop` of the photo shrunk to short side `resize` (eval),
    or with `train`, a `resize` square at a random place along the long side (the rest of the
    random crop is done on the device)."""

    def __init__(
        self,
        photos: list[PhotoRef],
        labels: list[int],
        cache: PhotoCache | None,
        resize: int,
        crop: int,
        train: bool = False,
    ) -> None:
        self.photos, self.labels, self.cache = photos, labels, cache
        self.resize, self.crop, self.train = resize, crop, train

    def __len__(self) -> int:
        return len(self.photos)

    def _open(self, ref: PhotoRef) -> Image.Image:
        box = parse_box(ref.box) if ref.box else None
        if self.cache is not None and ref.key is not None:
            return self.cache.open(ref.key, ref.path, box)
        img = load_image(ref.path)
        return img if box is None else crop(img, box)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = fit_short_side(self._open(self.photos[i]), self.resize)
        if self.train:
            slack_x, slack_y = img.width - self.resize, img.height - self.resize
            left = int(torch.randint(slack_x + 1, ()).item())
            top = int(torch.randint(slack_y + 1, ()).item())
            img = img.crop((left, top, left + self.resize, top + self.resize))
        else:
            img = centre_square(img, self.crop)
        return to_uint8(img), self.labels[i]


def default_workers() -> int:
    """One loader process per two cores, up to 8: the rest run the model."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def photo_loader(
    dataset: Photos,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    collate_fn: Callable[[list[tuple[torch.Tensor, int]]], Any] | None = None,
    persistent: bool = False,
) -> DataLoader[Any]:
    """Batches of photos decoded in `workers` processes, ahead of the model: uint8, or whatever
    `collate_fn` makes of them there."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=pin_memory,
        # Kept across epochs for training: starting workers anew each epoch leaves the model idle.
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers else None,
        collate_fn=collate_fn,
    )
