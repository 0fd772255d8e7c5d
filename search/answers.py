"""The answers to photo files: each photo decoded under the store's budget and answered by
`Finder.answer`, or the reason it could not be read; as words or as JSON.

The models are loaded once for a whole folder. An answer whose best score is under the
threshold fitted on validation says so ("not sure") instead of passing a guess for a finding;
a photo that cannot be read is reported and the others are still answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from search.finder import Finder, FoundObject
from training.data import UnreadablePhoto, load_image

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


@dataclass(frozen=True)
class PhotoAnswer:
    photo: Path
    objects: list[FoundObject]  # best first; empty when the photo could not be read
    problem: str = ""  # why the photo could not be answered


def photos_in(target: Path) -> list[Path]:
    """`target` itself, or the photos of a folder (by suffix, sorted)."""
    target = Path(target)
    if target.is_dir():
        photos = sorted(p for p in target.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
        if not photos:
            raise UnreadablePhoto(f"no photos in {target} (looked for {', '.join(sorted(PHOTO_SUFFIXES))})")
        return photos
    if not target.is_file():
        raise UnreadablePhoto(f"no photo or folder at {target}")
    return [target]


def answer_files(finder: Finder, photos: list[Path], k: int = 3) -> Iterator[tuple[PhotoAnswer, Image.Image | None]]:
    """Each photo's answer in turn, with the decoded photo (None where it could not be read: the
    answer says why), so a caller that draws it decodes nothing twice."""
    for photo in photos:
        try:
            image = load_image(photo)
        except UnreadablePhoto as exc:
            yield PhotoAnswer(photo, [], str(exc)), None
            continue
        yield PhotoAnswer(photo, finder.answer([image], k)[0].objects), image


def as_json(answer: PhotoAnswer) -> dict[str, Any]:
    """An answer as plain data: for machines (`predict --json`, the web page)."""
    return {
        "photo": str(answer.photo),
        "problem": answer.problem or None,
        "objects": [
            {
                "box": list(o.box),
                "sure": o.sure,
                "products": [
                    {"product_id": m.product.product_id, "name": m.product.name, "url": m.product.url, "score": m.score}
                    for m in o.matches
                ],
            }
            for o in answer.objects
        ],
    }
