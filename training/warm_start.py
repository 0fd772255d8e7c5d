"""Where a retrain in top mode starts: the production model's tuned top, when that is safe.

A retrain after a few new photos would otherwise tune every member's last blocks from the ImageNet
weights again, the bulk of top mode's cost. It starts instead from the blocks production tuned,
for fewer epochs (`top_retrain_epochs`), when production was made in top mode with the same
sides, blocks and weights, and none of the photos it learned from is now a validation or test
photo. Splits move as new groups arrive; a model that learned from a photo now in test would make
the new report too kind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from core.boxes import view_key
from core.layout import Layout
from core.settings import TrainConfig
from training.data import Snapshot

log = logging.getLogger(__name__)

# What decides whether production's tuned top fits the model a retrain builds.
SAME = ("image_size", "resize_ratio", "top_blocks")


@dataclass(frozen=True)
class WarmStart:
    version: str  # the production model it starts from
    states: dict[str, dict[str, torch.Tensor]]  # member -> the weights of its tuned top (no classifier)


def top_weights(state: dict[str, torch.Tensor], top_blocks: int) -> dict[str, torch.Tensor]:
    """The part of an EfficientNet-Lite's state dict that top mode tunes, less the classifier."""
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    first = n_blocks - top_blocks

    def tuned(key: str) -> bool:
        if key.startswith("_blocks."):
            return int(key.split(".")[1]) >= first
        return key.startswith(("_conv_head.", "_bn1."))

    return {k: v for k, v in state.items() if tuned(k)}


def warm_start(layout: Layout, snapshot: Snapshot, config: TrainConfig) -> WarmStart | None:
    """Production's tuned tops for this snapshot and config, or None (the reason logged)."""
    model_path = layout.production_dir / "model.pt"
    if config.force or not model_path.exists():
        return None
    # Mapped, as same_as_production reads it too: only the tops taken from it are read whole.
    made: dict[str, Any] = torch.load(model_path, map_location="cpu", weights_only=True, mmap=True)
    version = str(made.get("version", "production"))
    settings = made.get("config", {})
    if made.get("mode") != "top" or any(settings.get(k) != getattr(config, k) for k in SAME):
        log.info(
            "tuning from the ImageNet weights: production %s was not made in top mode with these settings", version
        )
        return None
    if dict(settings.get("weights", {})) != dict(config.weights):
        return None
    moved = _learned_from_now_held_out(layout, snapshot)
    if moved:
        log.info(
            "tuning from the ImageNet weights: %d photos production %s learned from are now held out", moved, version
        )
        return None
    states = {
        name: top_weights(member["state_dict"], config.top_blocks)
        for name, member in made["members"].items()
        if name in config.members and "top_tune" in member["history"]
    }
    return WarmStart(version, states) if states else None


def _learned_from_now_held_out(layout: Layout, snapshot: Snapshot) -> int:
    """How many photos production trained on (or chose its epoch on) are now in validation or test."""
    path = layout.production_dir / "snapshot.json"
    if not path.exists():
        return len(snapshot.examples)  # unknown: count every photo as moved
    before = json.loads(path.read_text())["examples"]
    now = {view_key(e.sha256, e.box): e.split for e in snapshot.examples}
    held_out = {"train": ("val", "test"), "val": ("test",)}
    return sum(1 for e in before if now.get(view_key(e["sha256"], e.get("box", ""))) in held_out.get(e["split"], ()))
