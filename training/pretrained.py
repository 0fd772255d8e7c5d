"""Search before any training: the members' ImageNet bodies as the embedding.

A new shop, or a new product, has a catalog photo and few reviews: nothing a classifier head can
learn from. Frozen ImageNet features already place two photos of one object near each other, so
the index can start from them: each member's pooled features as a unit vector, joined (the
members' cosines averaged). Standardising each channel on the photos at hand was tried first: on
the grocery photos, with the 81 catalog photos on white as those photos, it halved the Recall@1
of customers' photos against them (18.7 against 39.8, tests/benchmarks/catalog_to_photo.py), as
statistics of white-background photos misjudge photos taken in a shop.

No product enters a classifier head, so the answer is the index's alone, and as nothing was held
out to say how far a score can be trusted, every answer is "not sure". The ensemble's version
names the bodies and the input side, so the index stage keeps adding to an index made with them
and starts again for a trained model (once one is promoted) or when asked to rebuild.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from core.settings import TrainConfig, from_mapping
from training.bundle import Ensemble, TrainedMember
from training.calibrate import Calibration
from training.embedding import Embedding
from training.features import body_digest, feature_dim
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


def pretrained_ensemble(config: TrainConfig) -> Ensemble:
    """The members' bodies as an ensemble with no product: its embedding their joined unit features."""
    members = pretrained_members(config)
    digest = hashlib.sha256()
    width = 0
    for t in members:
        digest.update(
            f"{t.member.name}:{t.size}:{config.resize_ratio:g}:{body_digest(t.model, t.member.head)};".encode()
        )
        width += feature_dim(t.model, t.member.head)
    embedding = Embedding(
        [t.member.name for t in members], torch.zeros(width), torch.ones(width), None, sure_threshold=NEVER_SURE
    )
    calibration = Calibration({}, {}, {}, 1.0, NEVER_SURE, True)
    return Ensemble([], members, config, "", calibration, MODE, f"{MODE}-{digest.hexdigest()[:12]}", embedding)


def state(ensemble: Ensemble) -> dict[str, Any]:
    """Which bodies, at which side, and the catalog photos' map the index stage fitted for them."""
    c = ensemble.config
    settings = {"members": list(c.members), "image_size": c.image_size, "resize_ratio": c.resize_ratio,
                "weights": dict(c.weights)}  # fmt: skip
    assert ensemble.embedding is not None
    catalog_map = [ensemble.embedding.catalog_scale, ensemble.embedding.catalog_shift]
    return {"config": settings, "version": ensemble.version, "catalog_map": catalog_map}


def from_state(saved: dict[str, Any]) -> Ensemble:
    """The ensemble `state` kept; its version is checked, so changed weights files are not taken for it."""
    ensemble = pretrained_ensemble(from_mapping(TrainConfig, saved["config"]))
    if ensemble.version != saved["version"]:
        raise ValueError(f"the pretrained bodies changed since the index was built ({saved['version']})")
    assert ensemble.embedding is not None
    ensemble.embedding.catalog_scale, ensemble.embedding.catalog_shift = saved.get("catalog_map", (1.0, 0.0))
    return ensemble
