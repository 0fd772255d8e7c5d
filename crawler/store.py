"""The content-addressed photo store: each photo once, named by the SHA-256 of its bytes."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.images import OverBudget, PixelBudget
from core.photos import store_name
from core.store import SharedStore, write_atomically
from crawler.errors import InvalidImage

FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


@dataclass(frozen=True)
class StoredPhoto:
    sha256: str
    path: str  # relative to the store's root
    format: str
    width: int
    height: int
    bytes: int


def inspect_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Returns (format, width, height) of an image that decodes whole; raises InvalidImage."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format or "", img.size
                PixelBudget(max_pixels).check_header(w, h, "the image")
                if fmt not in FORMATS:
                    raise InvalidImage(f"unsupported format: {fmt or 'unknown'}")
                img.load()  # decodes every byte: a truncated file fails here
        except InvalidImage:
            raise
        except OverBudget as exc:
            raise InvalidImage(str(exc)) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidImage("decompression bomb") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImage(f"not a decodable image: {exc}") from exc
    return fmt, w, h


class PhotoStore:
    """Photos under `root/ab/<sha256>.<ext>`; a write is whole or absent, never partial."""

    def __init__(self, root: Path, max_pixels: int = 40_000_000, shared: SharedStore | None = None) -> None:
        self.root = Path(root)
        self.max_pixels = max_pixels
        self.shared = shared  # the copy every machine reads, where the store is shared
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> StoredPhoto:
        """Verifies `data` is an image and stores it once; returns where it lies."""
        fmt, w, h = inspect_image(data, self.max_pixels)
        sha = hashlib.sha256(data).hexdigest()
        rel = store_name(sha, FORMATS[fmt])
        # The shared copy first: a photo in the manifest is then always in the shared store.
        if self.shared is not None and not self.shared.has(rel):
            self.shared.put(rel, data)
        final = self.root / rel
        if not final.exists():
            write_atomically(final, data)
        return StoredPhoto(sha, rel, fmt, w, h, len(data))

    def path(self, rel: str) -> Path:
        return self.root / rel

    def sweep_temporary(self) -> int:
        """Removes temporary files a killed run left; returns how many."""
        stray = list(self.root.glob("*/.tmp-*"))
        for f in stray:
            f.unlink(missing_ok=True)
        return len(stray)
