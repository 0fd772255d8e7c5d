"""predict: the three most likely products for a photo, with their names, links and scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import UnidentifiedImageError

from core.errors import ReviewlensError
from training.bundle import Ensemble, soft_vote
from training.data import ProductClass


class UnreadablePhoto(ReviewlensError):
    """The photo to search by is missing or not an image."""


@dataclass(frozen=True)
class Guess:
    product: ProductClass
    score: float


def predict(ensemble: Ensemble, photo: Path, k: int = 3) -> list[Guess]:
    """Returns the `k` products the ensemble finds most likely in `photo`, best first."""
    photo = Path(photo)
    if not photo.is_file():
        raise UnreadablePhoto(f"no photo at {photo}")
    try:
        probs = soft_vote(ensemble.member_probs([photo]))[0]
    except (UnidentifiedImageError, OSError) as exc:
        raise UnreadablePhoto(f"{photo} is not a readable image: {exc}") from exc
    top = probs.topk(min(k, len(ensemble.classes)))
    return [Guess(ensemble.classes[int(i)], float(s)) for s, i in zip(top.values, top.indices, strict=True)]
