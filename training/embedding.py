"""The embedding that finds products the classifier was never trained on.

A classifier head names the products it was trained on and no other. Search by nearest photo
names any product with a photo in the index, but frozen ImageNet features know objects, not
products. The embedding between them is trained for it as a normalised softmax (Wang et al.,
"NormFace", 2017; Zhai and Wu, "Classification is a strong baseline for deep metric learning",
2019): the members' features, standardized and joined, go through one linear map to a unit
sphere, and a cosine against one learned proxy per product, times a fixed scale, is trained
with cross-entropy. The map starts at the principal components of the training features, so
it begins as the frozen features' own best 256-d view and learns from there; dropout on its
input keeps it from leaning on a few channels that only the trained products need.

A shop's catalog photo (on white, lit and framed by the shop) is less like a customer's photo of
the product than another customer's photo is, so a product known only by its catalog photo lost
to products with customer photos: on the grocery photos, with the 81 catalog photos and 60
products' customer photos in one index, the 21 others were in the top 3 answered for their own
test photos 60.3% of the time. A catalog photo's similarity is therefore put in customer photos'
terms: on validation, each kind's best similarity per product is fitted to the odds that the
product is the photo's (a logistic regression per kind), and a catalog similarity counts as the
customer similarity with the same odds: 78.9%, while the 60 products' own photos went from 96.4%
to 95.7% (tests/benchmarks/catalog_to_photo.py).

Measured on unseen products in tests/benchmarks/open_set.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

DIM = 256
SCALE = 16.0  # the cosine's scale: NormFace's range for a few hundred classes
DROPOUT = 0.5
EPOCHS = 100
BATCH = 256
# How much the classifier's opinion counts beside the index's when they are merged. At 1 the
# classifier's confidence on its own products buries products it never saw; at 0 its finer
# judgement on its own products is lost. Chosen on tests/benchmarks/open_set.py's grocery photos
# (both Top-1s over weights 0..1); merge's docstring says what it finds and costs today.
CLASSIFIER_WEIGHT = 0.2
TEMPERATURES = tuple(t / 100 for t in range(1, 21))  # the grid for the search's softmax over products
# Validation photos whose product has a catalog photo among the training photos, at least, to fit
# the catalog photos' map (the module's docstring); with fewer a catalog similarity counts as it is.
MIN_CATALOG_FIT = 10
ODDS_L2 = 1e-5  # on the slope of that fit's logistic regressions (fit_odds says why)


@dataclass
class Embedding:
    """Features of the named members (in this order) -> unit vectors of DIM."""

    members: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    # (DIM, joined feature width). None: no map was learned (training/pretrained.py), and each
    # member's features are made unit vectors and joined; mean and std then only give the width.
    weight: torch.Tensor | None
    temperature: float = 0.05  # of the softmax over products' best similarities, fitted on validation
    sure_threshold: float = 0.5  # the merged answer's, fitted on validation as the classifier's is
    # A region of a photo is an object when its nearest product photo is at least this similar:
    # what 95% of validation photos reach to their own product's nearest photo.
    object_similarity: float = 0.0
    # A catalog photo's similarity s counts as catalog_scale * s + catalog_shift (the module's docstring).
    catalog_scale: float = 1.0
    catalog_shift: float = 0.0

    def in_customer_terms(self, similarity: torch.Tensor) -> torch.Tensor:
        """Catalog photos' similarities (-1 where none) as the customer photos' with the same odds."""
        mapped = (self.catalog_scale * similarity + self.catalog_shift).clamp(min=-1 + 1e-6)
        return torch.where(similarity > -1, mapped, -1.0)

    @torch.inference_mode()
    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.weight is None:  # the frozen bodies' own view: each member's features a unit vector, joined
            return F.normalize(torch.cat([F.normalize(features[n].float(), dim=1) for n in self.members], 1), dim=1)
        joined = torch.cat([features[name].float() for name in self.members], 1)
        return F.normalize(((joined - self.mean) / self.std) @ self.weight.T, dim=1)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1] if self.weight is None else self.weight.shape[0])

    def state(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "mean": self.mean,
            "std": self.std,
            "weight": self.weight,
            "temperature": self.temperature,
            "sure_threshold": self.sure_threshold,
            "object_similarity": self.object_similarity,
            "catalog_scale": self.catalog_scale,
            "catalog_shift": self.catalog_shift,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Embedding:
        return cls(
            list(state["members"]),
            state["mean"],
            state["std"],
            state["weight"],
            float(state["temperature"]),
            float(state["sure_threshold"]),
            float(state["object_similarity"]),
            float(state.get("catalog_scale", 1.0)),  # a model trained before the map: none
            float(state.get("catalog_shift", 0.0)),
        )


SIMILARITY_BLOCK = 16_000_000  # similarities computed at once (64 MB)
# Photos the embedding learns from at most: a seeded sample of a larger shop's, so that training's
# memory stays flat as a shop grows (train_memory).
EMBEDDING_PHOTOS = 20_000


def fit_embedding(features: dict[str, torch.Tensor], labels: torch.Tensor, seed: int = 0) -> Embedding:
    """Trains the map on (N, width) features per member and their product labels."""
    members = list(features)
    joined = torch.cat([features[name].float() for name in members], 1)
    mean, std = joined.mean(0), joined.std(0).clamp(min=1e-6)
    z = (joined - mean) / std
    dim = min(DIM, z.shape[1], max(2, len(z) - 1))
    generator = torch.Generator().manual_seed(seed)
    projection = torch.nn.Linear(z.shape[1], dim, bias=False)
    with torch.no_grad():
        projection.weight.copy_(torch.linalg.svd(z - z.mean(0), full_matrices=False)[2][:dim])
    n_classes = int(labels.max()) + 1
    proxies = torch.nn.Parameter(torch.randn(n_classes, dim, generator=generator) * 0.01)
    optimizer = torch.optim.AdamW([*projection.parameters(), proxies], lr=1e-3, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(EPOCHS):
            order = torch.randperm(len(z), generator=generator)
            for start in range(0, len(z), BATCH):
                batch = order[start : start + BATCH]
                x = F.dropout(z[batch], DROPOUT, training=True)
                cosine = F.normalize(projection(x), dim=1) @ F.normalize(proxies, dim=1).T
                loss = F.cross_entropy(SCALE * cosine, labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return Embedding(members, mean, std, projection.weight.detach().clone())


def best_by_product(similarity: torch.Tensor, products: torch.Tensor, n_products: int) -> torch.Tensor:
    """(queries, photos) similarities -> (queries, products): each product's most similar photo; -1 for none."""
    out = torch.full((similarity.shape[0], n_products), -1.0)
    return out.scatter_reduce(1, products.expand_as(similarity), similarity, reduce="amax")


def nearest_by_product(
    queries: torch.Tensor, photos: torch.Tensor, products: torch.Tensor, n_products: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(each product's most similar photo (queries, products), each query's nearest photo's row)
    for unit vectors, a block of queries at a time: the whole (queries, photos) matrix of a large
    shop would hold gigabytes."""
    block = max(1, SIMILARITY_BLOCK // max(1, len(photos)))
    best, nearest = [], []
    for start in range(0, len(queries), block):
        similarity = queries[start : start + block] @ photos.T
        best.append(best_by_product(similarity, products, n_products))
        nearest.append(similarity.argmax(1))
    if not best:
        return torch.empty(0, n_products), torch.empty(0, dtype=torch.long)
    return torch.cat(best), torch.cat(nearest)


def fit_temperature(best: torch.Tensor, truth: torch.Tensor) -> float:
    """The softmax temperature over products' best similarities (queries, products) that minimizes
    the log-loss of `truth`."""
    losses = {t: float(F.cross_entropy(best / t, truth)) for t in TEMPERATURES}
    return min(losses, key=losses.__getitem__)


def fit_odds(best: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(a, b) of a logistic regression of "this product is the photo's" on each product's best
    similarity (queries, products; -1 where none), fitted with L-BFGS."""
    shown = best > -1
    x = best[shown]
    y = (torch.arange(best.shape[1])[None, :] == truth[:, None])[shown].float()
    ab = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.LBFGS([ab], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        # A touch of L2 on the slope: on photos the similarity separates perfectly (a few products)
        # the slope would grow without end, and the map with it.
        value = F.binary_cross_entropy_with_logits(ab[0] * x + ab[1], y) + ODDS_L2 * ab[0] ** 2
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    return float(ab[0].detach()), float(ab[1].detach())


def fit_catalog_map(
    best_catalog: torch.Tensor, best_customer: torch.Tensor, truth: torch.Tensor
) -> tuple[float, float]:
    """(catalog_scale, catalog_shift) from validation photos' best similarity per product among
    the catalog photos and among the customer photos (the module's docstring); (1, 0), a
    similarity as it is, where too few photos have both to tell."""
    own_catalog = best_catalog.gather(1, truth[:, None])[:, 0] > -1
    own_customer = best_customer.gather(1, truth[:, None])[:, 0] > -1
    if int(own_catalog.sum()) < MIN_CATALOG_FIT or int(own_customer.sum()) < MIN_CATALOG_FIT:
        return 1.0, 0.0
    a_catalog, b_catalog = fit_odds(best_catalog, truth)
    a_customer, b_customer = fit_odds(best_customer, truth)
    if a_catalog <= 0 or a_customer <= 0:  # similarity that says nothing of the product: no map
        return 1.0, 0.0
    return a_catalog / a_customer, (b_catalog - b_customer) / a_customer


def merge(classifier: torch.Tensor, best: torch.Tensor, temperature: float) -> torch.Tensor:
    """The merged answer (N, products) from the classifier's probabilities (N, known) over the
    first `known` products and each product's best similarity (N, products), -1 where none of
    the nearest photos shows it.

    Both opinions are multiplied (a product of experts). A classifier was trained as if its
    products were the only ones, so on a product it never saw its opinion is its own doubt: the
    probability it leaves beside its first answer (Hendrycks and Gimpel, 2017: the largest softmax
    probability is the baseline sign of a class never trained on), and at least the uniform one.
    A sure classifier still outweighs a slightly nearer photo of a new product; an unsure one
    leaves the new product to the index.

    Where it counted the uniform opinion instead, the classifier pulled a new product's photos to
    the products it knew. Measured on the grocery photos with 60 products trained, the uniform
    opinion against the doubt: the 21 others' test photos answered among the 81 catalog photos,
    Recall@1 38.6 and 45.3, Recall@3 79.3 and 81.7 (tests/benchmarks/catalog_to_photo.py); among
    every product's customer photos, Top-1 58.5 and 64.5, for the 60 products' own 81.2 and 79.3
    (the classifier alone, which never weighs the 21: 84.9; tests/benchmarks/open_set.py, 3 splits).
    """
    n_known = classifier.shape[1]
    # A product none of the nearest photos shows is at most as similar as the farthest of them.
    shown = best > -1
    farthest = torch.where(shown, best, torch.inf).min(1, keepdim=True).values
    from_index = torch.where(shown, best, farthest) / temperature
    if not n_known:  # no classifier (before any training): the index alone answers
        return from_index.softmax(1)
    doubt = 1 - classifier.max(1, keepdim=True).values
    opinion = doubt.clamp(min=1 / n_known).log().expand_as(from_index).clone()
    opinion[:, :n_known] = classifier.clamp(min=1e-12).log()
    return (from_index.log_softmax(1) + CLASSIFIER_WEIGHT * opinion).softmax(1)
