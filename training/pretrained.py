"""Search before any training: the members' ImageNet bodies as the embedding.

A new shop, or a new product, has a catalog photo and few reviews: nothing a classifier head can
learn from. Frozen ImageNet features already place two photos of one object near each other, so
the index can start from them: each member's pooled features, standardised on the shop's own
photos (each channel's mean and spread, so no channel that is large everywhere decides) and
joined. No product enters a classifier head, so the answer is the index's alone, and as nothing
was held out to say how far a score can be trusted, every answer is "not sure".

The statistics are fixed when the index is first built and kept with it; the ensemble's version
names the bodies, the input side and those statistics, so the index stage keeps adding to it and
starts again only for a trained model (once one is promoted) or when asked to rebuild.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from core.layout import Layout
from core.settings import TrainConfig, from_mapping
from training.bundle import Ensemble, TrainedMember
from training.calibrate import Calibration
from training.embedding import Embedding
from training.features import body_digest
from training.loading import PhotoRef
from training.members import get_member

MODE = "pretrained"
NEVER_SURE = 1.01  # above any probability: nothing validated the answers' scores


def pretrained_members(config: TrainConfig) -> list[TrainedMember]:
    """Each member's ImageNet body (its classifier head, one output wide, is never asked)."""
    members = []
    for name in config.members:
        member = get_member(name)
        weights = config.weights.get(name)
        model = member.build(1, Path(weights) if weights else None, True).eval()
        members.append(TrainedMember(member, model, member.input_size(config.image_size)))
    return members


def _ensemble(config: TrainConfig, members: list[TrainedMember], mean: torch.Tensor, std: torch.Tensor) -> Ensemble:
    digest = hashlib.sha256()
    for trained in members:
        digest.update(
            f"{trained.member.name}:{trained.size}:{body_digest(trained.model, trained.member.head)};".encode()
        )
    digest.update(mean.numpy().tobytes() + std.numpy().tobytes())
    embedding = Embedding([t.member.name for t in members], mean, std, None, sure_threshold=NEVER_SURE)
    calibration = Calibration({}, {}, {}, 1.0, NEVER_SURE, True)
    version = f"{MODE}-{digest.hexdigest()[:12]}"
    return Ensemble([], members, config, "", calibration, MODE, version, embedding)


def fit_pretrained(config: TrainConfig, layout: Layout, photos: list[PhotoRef]) -> Ensemble:
    """The pretrained ensemble, its features standardised on `photos` (kept in the feature cache,
    so indexing them next embeds nothing again)."""
    members = pretrained_members(config)
    plain = _ensemble(config, members, torch.zeros(1), torch.ones(1))
    features = plain.photo_features(photos, layout)
    joined = torch.cat([features[t.member.name].float() for t in members], 1)
    if len(joined) > 1:
        mean, std = joined.mean(0), joined.std(0).clamp(min=1e-3)
    else:  # one photo says nothing of the spread: the features as they are
        mean, std = torch.zeros(joined.shape[1]), torch.ones(joined.shape[1])
    return _ensemble(config, members, mean, std)


def state(ensemble: Ensemble) -> dict[str, Any]:
    assert ensemble.embedding is not None
    return {
        "config": {"members": list(ensemble.config.members), "image_size": ensemble.config.image_size,
                   "resize_ratio": ensemble.config.resize_ratio, "weights": dict(ensemble.config.weights)},
        "mean": ensemble.embedding.mean,
        "std": ensemble.embedding.std,
        "version": ensemble.version,
    }  # fmt: skip


def from_state(saved: dict[str, Any]) -> Ensemble:
    """The ensemble `state` kept; its version is checked, so changed weights files are not taken for it."""
    config = from_mapping(TrainConfig, saved["config"])
    ensemble = _ensemble(config, pretrained_members(config), saved["mean"], saved["std"])
    if ensemble.version != saved["version"]:
        raise ValueError(f"the pretrained bodies changed since the index was built ({saved['version']})")
    return ensemble
