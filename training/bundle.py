"""A trained ensemble read back from its model.pt: members rebuilt, weights loaded, ready to score."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import ReviewlensError
from core.settings import TrainConfig, from_mapping
from training.data import ProductClass, eval_transform, load_image
from training.members import Member, get_member
from training.runs import NoTrainedModel


class NotAModel(ReviewlensError):
    """A model file that is not what training writes: damaged, or planted."""


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
        try:
            # Tensors and plain data only: a model file is data, and a pickle that runs code is refused.
            bundle: dict[str, Any] = torch.load(file, map_location="cpu", weights_only=True)
            classes = [ProductClass(**c) for c in bundle["classes"]]
            members = []
            for name, saved in bundle["members"].items():
                if not all(torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point()):
                    raise NotAModel(
                        f"{file}: {name}'s weights are not finite (training diverged): retrain with a lower lr"
                    )
                member = get_member(name)
                model = member.build(len(classes), None, False)
                model.load_state_dict(saved["state_dict"], strict=True)
                members.append((member, model.eval()))
            config = from_mapping(TrainConfig, bundle["config"])
        except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, AttributeError, EOFError) as exc:
            raise NotAModel(
                f"{file} is not a model reviewlens wrote ({type(exc).__name__}): refusing to use it"
            ) from exc
        return cls(classes, members, config, bundle["snapshot_id"])

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
