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

The learned map still leans toward the products it was trained on. So the search vector joins
it with the features' own view, left untrained: each member's features made a unit vector,
joined, and projected on their first 256 principal components. Both halves are unit vectors,
weighed so that a cosine of the two joined is 3/4 the learned map's and 1/4 the untrained
view's, then projected on the joined training vectors' first 256 principal axes, which keeps
the index as wide as before. Measured on the grocery photos with an embedding trained on 60
products (tests/benchmarks/catalog_to_photo.py, open_set.py), the nearest catalog photo, Recall@1 /
@3: the 21 unseen products 46.1 / 72.3 with the learned map alone, 50.4 / 76.5 joined; the 60 seen
products 53.7 / 80.2 and 53.8 / 81.1; open_set's Recall@1 89.2 and 89.8. Half and half found the
unseen products a little better (53.6 / 76.5) but made a chart or a bare wall look like a product
to the object search (tests/test_search.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

DIM = 256
OWN_VIEW_DIM = 256  # principal components of the untrained half
LEARNED_SHARE = 0.75  # of a cosine, the learned map's; the rest is the untrained view's
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
    # The untrained half (the module's docstring): the centre and (OWN_VIEW_DIM, joined width)
    # principal axes of the joined unit features. None in a model trained before it, whose vectors
    # are the learned map's alone.
    own_centre: torch.Tensor | None = None
    own_axes: torch.Tensor | None = None
    joined_axes: torch.Tensor | None = None  # (DIM, both halves' width): the final projection

    @torch.inference_mode()
    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.weight is None:  # the frozen bodies' own view, whole
            return F.normalize(unit_joined(features, self.members), dim=1)
        joined = torch.cat([features[name].float() for name in self.members], 1)
        learned = F.normalize(((joined - self.mean) / self.std) @ self.weight.T, dim=1)
        if self.own_axes is None or self.own_centre is None:
            return learned
        own = F.normalize((unit_joined(features, self.members) - self.own_centre) @ self.own_axes.T, dim=1)
        both = torch.cat([math.sqrt(LEARNED_SHARE) * learned, math.sqrt(1 - LEARNED_SHARE) * own], 1)
        return both if self.joined_axes is None else F.normalize(both @ self.joined_axes.T, dim=1)

    @property
    def dim(self) -> int:
        if self.weight is None:
            return int(self.mean.shape[-1])
        if self.joined_axes is not None:
            return int(self.joined_axes.shape[0])
        return int(self.weight.shape[0] + (self.own_axes.shape[0] if self.own_axes is not None else 0))

    def state(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "mean": self.mean,
            "std": self.std,
            "weight": self.weight,
            "temperature": self.temperature,
            "sure_threshold": self.sure_threshold,
            "object_similarity": self.object_similarity,
            "own_centre": self.own_centre,
            "own_axes": self.own_axes,
            "joined_axes": self.joined_axes,
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
            state.get("own_centre"),
            state.get("own_axes"),
            state.get("joined_axes"),
        )


def unit_joined(features: dict[str, torch.Tensor], members: list[str]) -> torch.Tensor:
    """Each member's features made a unit vector, joined (N, joined width)."""
    return torch.cat([F.normalize(features[name].float(), dim=1) for name in members], 1)


def own_view(features: dict[str, torch.Tensor], members: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The untrained half's centre and principal axes, from the training photos' features."""
    joined = unit_joined(features, members)
    centre = joined.mean(0)
    dim = min(OWN_VIEW_DIM, joined.shape[1], max(1, len(joined) - 1))
    # A randomized SVD: the first components of 20,000 x 4,000 features in seconds, not a minute;
    # seeded, so that one training set gives one model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _, _, axes = torch.pca_lowrank(joined - centre, q=dim, center=False, niter=4)
    return centre, axes.T.contiguous()


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
    centre, axes = own_view(features, members)
    embedding = Embedding(members, mean, std, projection.weight.detach().clone(), own_centre=centre, own_axes=axes)
    both = embedding(features)
    # Uncentred: a projection of unit vectors, so a cosine keeps its scale.
    embedding.joined_axes = torch.linalg.svd(both, full_matrices=False)[2][: min(DIM, *both.shape)].contiguous()
    return embedding


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
