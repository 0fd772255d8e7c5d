"""The budget every image is read under, checked on its header before a pixel is decoded: the
crawler, `import`, training, `predict`, `serve` and the ML backend alike.

A small file may claim a huge image (a 5 kB PNG of 40,000,000 x 1 pixels), and what decoding
costs is what it holds: three bytes a pixel, and the tiles and resizes made of it after. Two
checks bound that:
- pixels: the header's width x height, and for what a request sends (`UPLOAD`), the pixels held
  once decoded. A JPEG decodes at 1/2, 1/4 or 1/8 of its size on request, so a phone's largest
  JPEG costs little; a PNG or WebP is held whole.
- shape: the longest side at most `max_aspect` times the shortest. A 30,000 x 1 image is no
  photo, and every view cut from it costs as much as a large one.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ReviewlensError


class OverBudget(ReviewlensError):
    """An image larger or stranger in shape than its budget allows; the message says which."""


@dataclass(frozen=True)
class PixelBudget:
    pixels: int  # the header's width x height, at most
    max_aspect: float = 20.0  # longest side over shortest side, at most
    decoded_pixels: int | None = None  # the pixels held once decoded, at most, where it differs

    def check_header(self, width: int, height: int, name: str) -> None:
        """Raises OverBudget for an image of this size, before it is decoded."""
        if width < 1 or height < 1:
            raise OverBudget(f"{name} has no pixels ({width}x{height})")
        if width * height > self.pixels:
            raise OverBudget(f"{name} has too many pixels to decode safely: {width}x{height}, at most {self.pixels:,}")
        if max(width, height) > self.max_aspect * min(width, height):
            raise OverBudget(
                f"{name} is {width}x{height}: no photo is more than {self.max_aspect:g} times as long as it is wide"
            )

    def check_decoded(self, width: int, height: int, name: str) -> None:
        """Raises OverBudget when decoding at this size (a JPEG's reduced one) would hold too many pixels."""
        if self.decoded_pixels is not None and width * height > self.decoded_pixels:
            raise OverBudget(
                f"{name} has too many pixels to decode safely: {width}x{height} held whole, "
                f"at most {self.decoded_pixels:,} (a JPEG is decoded reduced, a PNG or WebP whole)"
            )


# Photos kept in the store: the crawler's default cap (CrawlConfig.max_image_pixels).
STORED = PixelBudget(40_000_000)
# What a request sends (`serve`, the ML backend): a JPEG of up to 100 megapixels decodes at an
# eighth of its side; any image held whole is at most 16 megapixels, 48 MB.
UPLOAD = PixelBudget(100_000_000, decoded_pixels=16_000_000)
