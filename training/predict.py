"""predict: the three most likely products for a photo, with their names, links and scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.bundle import Ensemble, soft_vote
from training.data import ProductClass, UnreadablePhoto


@dataclass(frozen=True)
class Guess:
    product: ProductClass
    score: float


def predict(ensemble: Ensemble, photo: Path, k: int = 3) -> list[Guess]:
    """Returns the `k` products the ensemble finds most likely in `photo`, best first."""
    photo = Path(photo)
    if not photo.is_file():
        raise UnreadablePhoto(f"no photo at {photo}")
    probs = soft_vote(ensemble.member_probs([photo]))[0]
    top = probs.topk(min(k, len(ensemble.classes)))
    return [Guess(ensemble.classes[int(i)], float(s)) for s, i in zip(top.values, top.indices, strict=True)]
