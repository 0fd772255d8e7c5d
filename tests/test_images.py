"""The pixel budget every image is read under (core/images.py), checked on the header."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

from core.images import STORED, UPLOAD, OverBudget
from crawler.errors import InvalidImage
from crawler.store import inspect_image
from training.data import UnreadablePhoto, decode_image


def _encoded(size: tuple[int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("L" if fmt == "JPEG" else "1", size).save(out, fmt, optimize=fmt == "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("size", "fmt", "said"),
    [
        ((30_000, 1), "PNG", "more than 20 times as long"),
        ((1, 30_000), "PNG", "more than 20 times as long"),
        ((6_400, 6_250), "PNG", "held whole, at most 16,000,000"),
        ((12_000, 9_000), "PNG", "too many pixels to decode safely: 12000x9000, at most 100,000,000"),
    ],
)
def test_an_upload_over_its_budget_is_refused_before_it_is_decoded(size: tuple[int, int], fmt: str, said: str) -> None:
    data = _encoded(size, fmt)
    tracemalloc.start()
    with pytest.raises(UnreadablePhoto, match=said):
        decode_image(io.BytesIO(data), "the photo", UPLOAD)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(data) < 200_000 and peak < 5_000_000  # nothing the size of its pixels was held


def test_a_phones_largest_jpeg_is_read_reduced_within_the_upload_budget() -> None:
    # 48 megapixels, as a phone's largest mode writes them: decoded at an eighth of its side.
    image = decode_image(io.BytesIO(_encoded((8_000, 6_000), "JPEG")), "the photo", UPLOAD)
    assert image.size == (1_000, 750)


def test_the_store_keeps_its_own_budget_and_the_same_shape_rule(tmp_path: Path) -> None:
    STORED.check_header(8_000, 5_000, "a stored photo")  # 40 megapixels: within the store's budget
    with pytest.raises(OverBudget, match="too many pixels"):
        STORED.check_header(8_000, 5_001, "a stored photo")
    with pytest.raises(InvalidImage, match="more than 20 times as long"):
        inspect_image(_encoded((30_000, 1), "PNG"), 40_000_000)
    thin = tmp_path / "thin.png"
    thin.write_bytes(_encoded((2_000, 50), "PNG"))
    with pytest.raises(UnreadablePhoto, match="more than 20 times as long"):
        decode_image(thin, str(thin))
