"""A trained ensemble read back from its model.pt: members rebuilt, weights loaded, ready to score."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.settings import TrainConfig, from_mapping
from training.data import ProductClass, eval_transform, load_image
from training.members import Member, get_member
from training.runs import NoTrainedModel


@dataclass
class Ensemble:
    classes: list[ProductClass]
    members: list[tuple[Member, nn.Module]]
    config: TrainConfig  # the settings that trained it: its evaluation transform follows them
    snapshot_id: str

    @classmethod
    def load(cls, path: Path) -> Ensemble:
        """Loads model.pt from a run folder or a file path."""
        path = Path(path)
        file = path / "model.pt" if path.is_dir() else path
        if not file.exists():
            raise NoTrainedModel(f"no trained model at {file}: run `reviewlens train` first")
        bundle: dict[str, Any] = torch.load(file, map_location="cpu", weights_only=False)
        classes = [ProductClass(**c) for c in bundle["classes"]]
        members = []
        for name, saved in bundle["members"].items():
            member = get_member(name)
            model = member.build(len(classes), None, False)
            model.load_state_dict(saved["state_dict"], strict=True)
            members.append((member, model.eval()))
        return cls(classes, members, from_mapping(TrainConfig, bundle["config"]), bundle["snapshot_id"])

    @torch.inference_mode()
    def member_probs(self, paths: list[Path], batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Returns each member's class probabilities (N, classes) for the photos at `paths`."""
        images = [load_image(p) for p in paths]
        out = {}
        for member, model in self.members:
            tf = eval_transform(self.config.image_size, self.config.resize_ratio, member.mean, member.std)
            chunks = [
                model(torch.stack([tf(im) for im in images[i : i + batch_size]])).softmax(-1)
                for i in range(0, len(images), batch_size)
            ]
            out[member.name] = torch.cat(chunks) if chunks else torch.empty(0, len(self.classes))
        return out


def soft_vote(probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The ensemble's probabilities: the mean of its members' (the study's soft voting)."""
    return torch.stack(list(probs.values())).mean(0)
