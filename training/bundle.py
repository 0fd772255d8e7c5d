"""A trained ensemble read back from its model.pt: members rebuilt, weights loaded, calibrated, ready to score."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from core.errors import ReviewlensError
from core.layout import Layout
from core.settings import TrainConfig, from_mapping
from training.augment import normalize
from training.calibrate import Calibration, ensemble_probs, member_probs
from training.data import ProductClass
from training.embedding import Embedding
from training.features import embed_batch, embed_missing, feature_dim, feature_store
from training.finetune import view_logits
from training.loading import PhotoRef, Photos, eval_square, photo_loader
from training.members import Member, for_inference, get_member
from training.photo_cache import PhotoCache
from training.runs import NoTrainedModel

# model.pt's layout; a file of another is refused with a word on what to do. Format 2 is read
# too: it has no search embedding, so it answers for its own products only.
BUNDLE_FORMAT = 3
READABLE_FORMATS = (2, 3)


class NotAModel(ReviewlensError):
    """A model file that is not what training writes: damaged, planted, or from an older release."""


@dataclass(frozen=True)
class TrainedMember:
    member: Member
    model: nn.Module
    size: int  # its input side


@dataclass
class Ensemble:
    classes: list[ProductClass]
    members: list[TrainedMember]
    config: TrainConfig  # the settings that trained it: its evaluation transform follows them
    snapshot_id: str
    calibration: Calibration
    mode: str  # quick, top or full
    version: str  # the run that made it
    embedding: Embedding | None = None  # the search embedding (models of format 2 have none)
    _inference: dict[tuple[str, str], nn.Module] = field(default_factory=dict, repr=False, compare=False)

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
            if bundle.get("format") not in READABLE_FORMATS:
                raise NotAModel(
                    f"{file} was written by an older reviewlens (format {bundle.get('format', 1)}, this one reads "
                    f"{BUNDLE_FORMAT}): train again with `reviewlens train`"
                )
            classes = [ProductClass(**c) for c in bundle["classes"]]
            config = from_mapping(TrainConfig, bundle["config"])
            members = []
            for name, saved in bundle["members"].items():
                if not all(torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point()):
                    raise NotAModel(
                        f"{file}: {name}'s weights are not finite (training diverged): retrain with a lower lr"
                    )
                member = get_member(name)
                model = member.build(len(classes), None, False)
                model.load_state_dict(saved["state_dict"], strict=True)
                members.append(TrainedMember(member, model.eval(), int(saved["history"]["image_size"])))
            calibration = Calibration(**bundle["calibration"])
            embedding = Embedding.from_state(bundle["embedding"]) if "embedding" in bundle else None
        except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, AttributeError, EOFError) as exc:
            raise NotAModel(
                f"{file} is not a model reviewlens wrote ({type(exc).__name__}): refusing to use it"
            ) from exc
        return cls(
            classes, members, config, bundle["snapshot_id"], calibration, bundle["mode"], bundle["version"], embedding
        )

    @torch.inference_mode()
    def member_logits(
        self, photos: list[PhotoRef], layout: Layout | None = None, workers: int = 0
    ) -> dict[str, torch.Tensor]:
        """Each member's logits (N, views, classes) for `photos` (and their mirror images where it pays).

        With a `layout`, store photos are read through its photo cache, and a member whose body
        is still the one whose features were cached answers from those features.
        """
        out = {}
        for trained in self.members:
            member, model, size = trained.member, trained.model, trained.size
            head = model.get_submodule(member.head)
            store = feature_store(layout, member, model, size, self.config.resize_ratio) if layout else None
            if (
                store is not None
                and photos
                and all(p.key for p in photos)
                and not store.missing([str(p.key) for p in photos])
            ):
                out[member.name] = torch.stack([head(f) for f in store.read([str(p.key) for p in photos]).unbind(1)], 1)
                continue
            cache = PhotoCache(layout.cache_dir / "photos", round(size * self.config.resize_ratio)) if layout else None
            dataset = Photos(photos, [0] * len(photos), cache, round(size * self.config.resize_ratio), size)
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            loader = photo_loader(dataset, 64, workers, pin_memory=dev.type == "cuda")
            mirror = self.calibration.flip[member.name]
            answering = self._answering(trained, dev)
            out[member.name] = view_logits(answering, loader, member, dev, mirror)
        return out

    def _answering(self, trained: TrainedMember, dev: torch.device) -> nn.Module:
        """The member folded for inference, made once: folding copies the whole network, which
        cost a tenth of a second on every photo `predict` answered."""
        key = (trained.member.name, str(dev))
        if key not in self._inference:
            self._inference[key] = for_inference(trained.model).to(dev).to(memory_format=torch.channels_last)
        return self._inference[key]

    @torch.inference_mode()
    def image_features(
        self, images: list[Image.Image], batch: int = 32, members: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Each member's features (N, width) of in-memory images (crops of a photo): the centre
        view; of the named `members` only, when given."""
        unknown = set(members or ()) - {t.member.name for t in self.members}
        if unknown:  # a silent skip would hand back features that leave a member out
            raise ValueError(f"{self.version} has no member {', '.join(sorted(unknown))}")
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        out = {}
        for trained in self.members:
            if members is not None and trained.member.name not in members:
                continue
            member, size = trained.member, trained.size
            model = self._answering(trained, dev)
            resize = round(size * self.config.resize_ratio)
            parts = []
            for start in range(0, len(images), batch):
                x = torch.stack([eval_square(img, resize, size) for img in images[start : start + batch]])
                x = normalize(x.to(dev), member.mean, member.std)
                parts.append(embed_batch(model, member.head, x)[:, 0].cpu())
            out[member.name] = torch.cat(parts) if parts else torch.empty(0, feature_dim(model, member.head))
        return out

    def photo_features(self, photos: list[PhotoRef], layout: Layout, workers: int = 0) -> dict[str, torch.Tensor]:
        """Each member's features (N, width) of stored photos, through the feature cache: only
        photos it lacks are embedded, and they are kept for the next time."""
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        by_key = {str(p.key): p for p in photos}
        keys = list(by_key)
        out = {}
        for trained in self.members:
            member, size = trained.member, trained.size
            store = feature_store(layout, member, trained.model, size, self.config.resize_ratio)
            resize = round(size * self.config.resize_ratio)
            cache = PhotoCache(layout.cache_dir / "photos", resize)
            model = self._answering(trained, dev)

            def batches(todo: list[str], cache: PhotoCache = cache, resize: int = resize, size: int = size) -> Any:
                dataset = Photos([by_key[k] for k in todo], [0] * len(todo), cache, resize, size)
                return photo_loader(dataset, 64, workers, pin_memory=dev.type == "cuda")

            def embed(x: torch.Tensor, model: nn.Module = model, member: Member = member) -> torch.Tensor:
                return embed_batch(model, member.head, normalize(x.to(dev), member.mean, member.std))

            embed_missing(store, keys, batches, embed)
            out[member.name] = store.read([str(p.key) for p in photos])[:, 0]
        return out

    @torch.inference_mode()
    def logits_of_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each member's logits (N, 1, classes) from its features: the centre view alone; of the
        members `features` holds."""
        return {
            t.member.name: t.model.get_submodule(t.member.head)(features[t.member.name]).unsqueeze(1)
            for t in self.members
            if t.member.name in features
        }

    def member_probs(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each member's calibrated probabilities (N, classes)."""
        c = self.calibration
        return {name: member_probs(lg, c.temperatures[name], c.flip[name]) for name, lg in logits.items()}

    def ensemble_probs(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ensemble's calibrated probabilities (training/calibrate.py)."""
        return ensemble_probs(logits, self.calibration)
