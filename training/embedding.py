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

Measured on unseen products in tests/benchmarks/open_set.py.
"""

from __future__ import annotations

import math
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
# classifier's confidence on its own products buries every product it never saw; at 0 its finer
# judgement on its own products is lost. tests/benchmarks/open_set.py measured both Top-1s over
# weights 0..1 on the grocery photos: 0.2 keeps the classifier's own Top-1 and finds most unseen
# products.
CLASSIFIER_WEIGHT = 0.2
TEMPERATURES = tuple(t / 100 for t in range(1, 21))  # the grid for the search's softmax over products


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


def merge(classifier: torch.Tensor, best: torch.Tensor, temperature: float) -> torch.Tensor:
    """The merged answer (N, products) from the classifier's probabilities (N, known) over the
    first `known` products and each product's best similarity (N, products), -1 where none of
    the nearest photos shows it.

    Both opinions are multiplied (a product of experts); on a product it was not trained on, the
    classifier has no opinion: the uniform one.
    """
    n_known = classifier.shape[1]
    # A product none of the nearest photos shows is at most as similar as the farthest of them.
    shown = best > -1
    farthest = torch.where(shown, best, torch.inf).min(1, keepdim=True).values
    from_index = torch.where(shown, best, farthest) / temperature
    opinion = torch.full_like(from_index, -math.log(max(n_known, 1)))
    opinion[:, :n_known] = classifier.clamp(min=1e-12).log()
    return (from_index.log_softmax(1) + CLASSIFIER_WEIGHT * opinion).softmax(1)
