"""Search by photo: every object in it, each with the three likeliest products of the whole shop.

Two opinions are merged. The classifier knows the products it was trained on, calibrated; the
index knows every product with a photo in it, as a softmax over each product's most similar
photo (its temperature fitted on validation). The answer is their weighted product, normalized
(a product of experts): where both know a product, both must agree for it to score high; on a
product the classifier never saw its opinion is its own doubt (training/embedding.py::merge), so
that a new product is left to the index unless the classifier is sure of one it knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.boxes import WHOLE, Box, crop
from core.layout import Layout
from models.coco_detector import Detector
from search.indexing import Product, load_index, load_pretrained
from search.objects import Scored, proposals, select
from search.product_index import ProductIndex
from training.bundle import Ensemble
from training.embedding import best_by_product, merge

NEIGHBOURS = 100  # photos fetched per query: the products among them get the index's probability
MOST_OBJECTS = 8
# Regions of a photo searched by the whole ensemble, after its cheapest member has screened them
# all (about 21 grid regions and the detector's boxes); the photo itself always is. On 200
# unseen-product queries of tests/benchmarks/catalog_to_photo.py, Recall@3 was 75.0 with 12, 76.0
# with 16 and 76.5 with every region; predict_latency takes 0.78 to 0.96 s a photo with 12.
SCREENED = 12


@dataclass(frozen=True)
class Match:
    product: Product
    score: float


@dataclass(frozen=True)
class FoundObject:
    box: Box
    matches: list[Match]  # best first
    sure: bool


@dataclass(frozen=True)
class Answer:
    """One photo's answer, the same wherever it is asked (`predict`, `serve`, the ML backend, the
    evaluation of search): each object found, best first; the photo as one object when it is
    answered whole or nothing in it is sure."""

    objects: list[FoundObject]

    @property
    def best(self) -> FoundObject:
        return self.objects[0]


class Finder:
    """The production model and its index, loaded once; answers photos and their objects."""

    def __init__(self, ensemble: Ensemble, index: ProductIndex | None, products: dict[str, Product]) -> None:
        self.ensemble, self.index = ensemble, index
        # Every product either opinion can name, the classifier's first (in its order); the
        # index's product list carries a photo of each to show.
        known = [products.get(c.product_id, Product(c.product_id, c.name, c.url)) for c in ensemble.classes]
        trained = {p.product_id for p in known}
        self.products = [*known, *(p for k, p in products.items() if k not in trained)]
        self.column = {p.product_id: i for i, p in enumerate(self.products)}
        self.n_known = len(ensemble.classes)
        self.detector: Detector | None = Detector()
        # A region is an object when the products a person is shown for it (its three likeliest)
        # hold a sure share of the probability: an object whose product is in doubt between two
        # look-alikes is still an object. Measured on grocery mosaics (tests/benchmarks/
        # multi_object.py --object-top): 84.8% of objects found against 69.5% when only the best
        # product counts, at 1.6 answers per object instead of 1.0.
        self.object_top = 3

    @classmethod
    def load(cls, layout: Layout, model: Path) -> Finder:
        return cls.of(layout, Ensemble.load(model))

    @classmethod
    def of(cls, layout: Layout, ensemble: Ensemble) -> Finder:
        """The Finder of `ensemble` and its index in `layout`, if the index stage built one for it."""
        found = load_index(layout, ensemble) if ensemble.embedding is not None else None
        index, products = found if found else (None, {})
        return cls(ensemble, index, products)

    @classmethod
    def before_training(cls, layout: Layout) -> Finder | None:
        """The Finder of the index built with the pretrained bodies, where no model is trained yet."""
        ensemble = load_pretrained(layout)
        finder = cls.of(layout, ensemble) if ensemble is not None else None
        # Without its index (since moved to a model) the bodies know no product to answer with.
        return finder if finder is not None and finder.index is not None else None

    @property
    def threshold(self) -> float:
        """The score from which an answer is sure: the merged answer's where the index takes part."""
        embedding = self.ensemble.embedding
        if self.index is not None and len(self.index) and embedding is not None:
            return embedding.sure_threshold
        return self.ensemble.calibration.sure_threshold

    @property
    def like_a_product(self) -> float:
        """The similarity to its nearest indexed photo below which a photo looks like no
        product's: the one validation photos of a trained product reach 95% of the time. A
        chart or a bare wall falls below it, however sharp the classifier's guess among the
        products it knows."""
        embedding = self.ensemble.embedding
        return embedding.object_similarity if embedding is not None and self.index is not None else -1.0

    def is_sure(self, score: float, nearest: float) -> bool:
        return score >= self.threshold and nearest >= self.like_a_product

    def answer(self, images: list[Image.Image], k: int = 3, objects: bool = True) -> list[Answer]:
        """Each photo's `k` likeliest products for each object in it (`objects`), or for the whole
        photo; the one answering function every caller asks."""
        if objects:
            return [Answer(self._objects(image, k)) for image in images]
        return self.answer_features(self.ensemble.image_features(images), k)

    def answer_features(self, features: dict[str, torch.Tensor], k: int = 3) -> list[Answer]:
        """Whole photos answered from each member's features (N, width), as `answer` answers them:
        for an evaluation that reads stored features instead of decoding every photo again."""
        probs, nearest = self.search(features)
        out = []
        for row, near in zip(probs, nearest, strict=True):
            matches = self.matches(row, k)
            out.append(Answer([FoundObject(WHOLE, matches, self.is_sure(matches[0].score, float(near)))]))
        return out

    def search(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged probabilities (N, products) and each query's similarity to its nearest photo
        (N; 1 where there is no index, so that every region may count)."""
        n = len(next(iter(features.values())))
        # Before any training (training/pretrained.py) there is no classifier: the index alone answers.
        classifier = (
            self.ensemble.ensemble_probs(self.ensemble.logits_of_features(features))
            if self.n_known
            else torch.zeros(n, 0)
        )
        merged = torch.zeros(n, len(self.products))
        merged[:, : self.n_known] = classifier
        embedding = self.ensemble.embedding
        if self.index is None or embedding is None or not len(self.index):
            return merged, torch.ones(n)
        vectors = embedding(features).numpy()
        similarity, rows = self.index.search(vectors, NEIGHBOURS)
        entries = self.index.entries
        if self.index.catalog_photos:
            # Catalog photos are searched apart, as a customer's photo is nearer other customers'
            # photos than any of them, and their similarity is put in customer photos' terms
            # (training/embedding.py); in the search of the whole index they count no more.
            rows = np.where(self.index.is_catalog(rows), -1, rows)
            found, catalog_rows = self.index.search_catalog(vectors, NEIGHBOURS)
            mapped = embedding.in_customer_terms(torch.from_numpy(found).float()).numpy()
            similarity, rows = np.concatenate([similarity, mapped], 1), np.concatenate([rows, catalog_rows], 1)
        columns = np.array([self.column[entries[r].product_id] if r >= 0 else 0 for r in rows.ravel()])
        similarity = np.where(rows >= 0, similarity, -1.0)
        best = best_by_product(
            torch.from_numpy(similarity).float(), torch.from_numpy(columns.reshape(rows.shape)), len(self.products)
        )
        nearest = torch.from_numpy(similarity.max(1)).float()
        return merge(merged[:, : self.n_known], best, embedding.temperature), nearest

    def matches(self, row: torch.Tensor, k: int) -> list[Match]:
        top = row.topk(min(k, len(self.products)))
        return [Match(self.products[int(i)], float(s)) for s, i in zip(top.values, top.indices, strict=True)]

    def _held(self, probs: torch.Tensor) -> torch.Tensor:
        """Each row's share of probability held by the products a person is shown for it (object_top):
        how sure a region is to be an object, for the screen and for the selection alike."""
        return probs.topk(min(self.object_top, probs.shape[1]), 1).values.sum(1)

    def _objects(self, image: Image.Image, k: int, most: int = MOST_OBJECTS) -> list[FoundObject]:
        """One entry per object found, best first; the photo's best guess when nothing is sure."""
        boxes, features = self._screened(image, proposals(image, self.detector))
        probs, nearest = self.search(features)
        best = probs.max(1)
        held = self._held(probs)
        # The whole photo is always a candidate; a region only where it looks like a product's photo.
        scored = [
            Scored(b, self.products[int(i)].product_id, float(s))
            for n, (b, s, i, near) in enumerate(zip(boxes, held, best.indices, nearest, strict=True))
            if n == 0 or near >= self.like_a_product
        ]
        kept = select(scored, self.threshold, most)
        by_box = {b: (row, float(near)) for b, row, near in zip(boxes, probs, nearest, strict=True)}
        out = []
        for s in kept:
            row, near = by_box[s.box]
            matches = self.matches(row, k)
            out.append(FoundObject(s.box, matches, self.is_sure(matches[0].score, near)))
        return out

    def _screened(self, image: Image.Image, boxes: list[Box]) -> tuple[list[Box], dict[str, torch.Tensor]]:
        """The photo and the SCREENED regions its cheapest member is surest of (the three
        likeliest products' share of its probability), with every member's features of them.

        Every member on every region cost most of an answer's time; the rest of the members now run
        only on the regions that may hold an object (tests/benchmarks/predict_latency.py: 1.57 to
        1.78 s a photo before, 0.78 to 0.96 s after). The screen knows only the trained products, so a
        region of an untrained one may be left out: on the grocery catalog benchmark's unseen
        products, 12 regions put the product in an object's top 3 for 75.0% of 200 queries, every
        region for 76.5%. With one member, or no classifier to screen with, every region is searched.
        """
        crops = [crop(image, b) for b in boxes]
        members = self.ensemble.members
        if len(members) < 2 or not self.n_known or len(boxes) <= SCREENED + 1:
            return boxes, self.ensemble.image_features(crops)
        cheap = min(members, key=lambda t: t.member.cost(self.ensemble.config.image_size))
        name = cheap.member.name
        first = self.ensemble.image_features(crops, members=[name])[name]
        with torch.inference_mode():
            probs = self.ensemble.member_probs(self.ensemble.logits_of_features({name: first}))[name]
        held = self._held(probs)
        chosen = [0, *(1 + held[1:].topk(SCREENED).indices).sort().values.tolist()]
        others = [t.member.name for t in members if t is not cheap]
        rest = self.ensemble.image_features([crops[i] for i in chosen], members=others)
        return [boxes[i] for i in chosen], {name: first[chosen], **rest}
