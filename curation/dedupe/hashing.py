"""Decoding a stored photo for checks, and its 64-bit perceptual hash, fast and in parallel.

pHash (imagehash's) looks at a 32 x 32 greyscale image, so a JPEG is decoded at reduced size
(Pillow's draft mode lets libjpeg skip most of the work) and in greyscale; EXIF orientation is
applied first so a rotated re-post hashes like its original. The decode, not the hash, is what
costs: tests/benchmarks/hash_rate.py measures it against a plain imagehash loop.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

# The draft decode is asked for at least this size: twice the 32 px pHash resizes to, so the
# final resize still averages over real pixels.
DRAFT_SIZE = (64, 64)


@dataclass(frozen=True)
class PhotoCheck:
    ok: bool
    reason: str  # empty when ok
    phash: int | None
    centre_hash: int | None = None  # pHash of the middle 80%, which a border crop keeps
    width: int = 0  # the photo's full size, upright
    height: int = 0


def check_photo(path: Path, min_side: int) -> PhotoCheck:
    """Decodes the photo upright and returns whether it is usable and its pHash.

    An unreadable photo is a result with a reason, never an exception: one bad file must not
    stop a batch.
    """
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(0x0112, 1)
            w, h = img.size
            img.draft("L", DRAFT_SIZE)
            img.load()
            upright = ImageOps.exif_transpose(img) if orientation != 1 else img
    except (OSError, SyntaxError, ValueError) as exc:
        return PhotoCheck(False, f"undecodable: {exc}", None)
    if orientation in (5, 6, 7, 8):  # rotated a quarter turn: width and height swap
        w, h = h, w
    if min(w, h) < min_side:
        return PhotoCheck(False, f"too small: {w}x{h}", None, None, w, h)
    uw, uh = upright.size
    centre = upright.crop((uw // 10, uh // 10, uw - uw // 10, uh - uh // 10))
    return PhotoCheck(True, "", phash(upright), phash(centre), w, h)


def phash(img: Image.Image) -> int:
    """imagehash's 64-bit pHash of `img` as an integer (its hex string, read as a number)."""
    return int(str(imagehash.phash(img)), 16)


def _check(args: tuple[Path, int]) -> PhotoCheck:
    return check_photo(*args)


# prctl(2): ask the kernel to send a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Makes a worker die with the dedupe that started it: a `kill -9` of dedupe leaves no orphan.

    Linux only; elsewhere a worker ends once it finds its parent's queue closed.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


def check_chunk(paths: list[Path], min_side: int) -> list[PhotoCheck]:
    """Checks a chunk of photos one after another: one task of a cluster's worker."""
    return [check_photo(path, min_side) for path in paths]


def check_photos(paths: Iterable[Path], min_side: int, workers: int = 0) -> Iterator[PhotoCheck]:
    """Checks photos in parallel across `workers` processes (0: one per core), in input order."""
    jobs = [(Path(p), min_side) for p in paths]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 64:
        yield from map(_check, jobs)
        return
    # A fork starts at once but copies the locks of any other thread mid-use: a threaded caller
    # (a Prefect flow) gets spawned workers instead, which start clean.
    method = "fork" if threading.active_count() == 1 else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_die_with_parent) as pool:
        yield from pool.map(_check, jobs, chunksize=64)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Returns the Hamming distances between every uint64 hash of `a` and every one of `b`."""
    return np.bitwise_count(np.bitwise_xor(a[:, None], b[None, :])).astype(np.int32)
