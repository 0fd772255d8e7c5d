"""predict: the three most likely products for each photo, or for each object in it, with names,
links and calibrated scores.

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

from training.bundle import Ensemble
from training.data import ProductClass, UnreadablePhoto, load_image
from training.loading import PhotoRef
from training.search import Finder, FoundObject

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


@dataclass(frozen=True)
class Guess:
    product: ProductClass
    score: float


@dataclass(frozen=True)
class Answer:
    photo: Path
    guesses: list[Guess]  # best first; empty when the photo could not be read
    sure: bool
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


def predict_many(ensemble: Ensemble, photos: list[Path], k: int = 3) -> list[Answer]:
    """Answers every photo with one load of the models; unreadable ones get their reason."""
    readable, answers = [], {}
    for photo in photos:
        try:
            load_image(photo)
            readable.append(photo)
        except UnreadablePhoto as exc:
            answers[photo] = Answer(photo, [], False, str(exc))
    if readable:
        probs = ensemble.ensemble_probs(ensemble.member_logits([PhotoRef(p) for p in readable]))
        for photo, row in zip(readable, probs, strict=True):
            top = row.topk(min(k, len(ensemble.classes)))
            guesses = [Guess(ensemble.classes[int(i)], float(s)) for s, i in zip(top.values, top.indices, strict=True)]
            answers[photo] = Answer(photo, guesses, guesses[0].score >= ensemble.calibration.sure_threshold)
    return [answers[p] for p in photos]


def predict(ensemble: Ensemble, photo: Path, k: int = 3) -> list[Guess]:
    """The `k` products the ensemble finds most likely in `photo`, best first."""
    answer = predict_many(ensemble, photos_in(photo)[:1], k)[0]
    if answer.problem:
        raise UnreadablePhoto(answer.problem)
    return answer.guesses


@dataclass(frozen=True)
class PhotoObjects:
    photo: Path
    objects: list[FoundObject]  # best first; empty when the photo could not be read
    problem: str = ""


def find_each(finder: Finder, photos: list[Path], k: int = 3) -> Iterator[tuple[PhotoObjects, Image.Image | None]]:
    """Every object of each photo in turn, with the decoded photo (None where it could not be
    read: the answer says why), so a caller that draws it decodes nothing twice."""
    for photo in photos:
        try:
            image = load_image(photo)
        except UnreadablePhoto as exc:
            yield PhotoObjects(photo, [], str(exc)), None
            continue
        yield PhotoObjects(photo, finder.find(image, k)), image


def find_many(finder: Finder, photos: list[Path], k: int = 3) -> list[PhotoObjects]:
    """Every object of every photo, with one load of the models; unreadable photos get their reason."""
    return [answer for answer, _ in find_each(finder, photos, k)]


def as_json(answer: PhotoObjects) -> dict[str, Any]:
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
