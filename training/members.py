"""Ensemble members by name: the study's three torchvision models and offline EfficientNet-Lites.

Each member is an ImageNet backbone with a new head for the shop's products. An unknown name
fails with the list of valid ones; missing weights fail with the way to supply them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from core.errors import ConfigError, ReviewlensError
from models import efficientnet_lite

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class MissingWeights(ReviewlensError):
    """ImageNet weights for a member could not be had; the message says how to supply them."""


@dataclass(frozen=True)
class Member:
    name: str
    # (num_classes, local weights file, whether to load ImageNet weights) -> model
    build: Callable[[int, Path | None, bool], nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    head_prefixes: tuple[str, ...]  # parameter names of the new head: it learns at the full rate
    head: str  # the final linear layer's module path: the head trained on frozen features
    image_size: int  # the input side it was pretrained at: its features are best there
    mflops: int  # multiply-adds of one photo at that side, in millions: what a photo costs it

    def cost(self, override: int) -> float:
        """Relative cost of one photo at the side it will see."""
        return self.mflops * (self.input_size(override) / self.image_size) ** 2

    def input_size(self, override: int) -> int:
        """The side this member trains and answers at: `override`, or its own when that is 0."""
        return override or self.image_size


def _torchvision(
    arch: Callable[..., nn.Module], weights_enum: tvm.WeightsEnum, replace_head: Callable[[nn.Module, int], None]
) -> Callable[[int, Path | None, bool], nn.Module]:
    def build(num_classes: int, weights_file: Path | None, pretrained: bool = True) -> nn.Module:
        model = arch(weights=None)
        # Not pretrained: a trained model's own weights are loaded over it by the caller.
        if pretrained and weights_file is not None:
            model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True), strict=True)
        elif pretrained:
            model.load_state_dict(_imagenet_state_dict(arch.__name__, weights_enum))
        replace_head(model, num_classes)
        return model

    return build


def _replace_linear(parent: nn.Module, child: str, n: int) -> None:
    old = parent.get_submodule(child)
    assert isinstance(old, nn.Linear)
    setattr(parent, child, nn.Linear(old.in_features, n))


def _imagenet_state_dict(name: str, weights: tvm.WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision's download of the ImageNet weights, or an error that says how to supply them."""
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError: no network
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise MissingWeights(
            f"ImageNet weights for {name} could not be downloaded ({exc}). Put the file "
            f"{file.name} at {file}, or pass --weights {name}=/path/to/weights.pth"
        ) from exc


def _vgg_head(m: nn.Module, n: int) -> None:
    _replace_linear(m.get_submodule("classifier"), "6", n)


def _resnet_head(m: nn.Module, n: int) -> None:
    _replace_linear(m, "fc", n)


def _mobilenet_head(m: nn.Module, n: int) -> None:
    _replace_linear(m.get_submodule("classifier"), "3", n)


def _lite(name: str) -> Callable[[int, Path | None, bool], nn.Module]:
    def build(num_classes: int, weights_file: Path | None, pretrained: bool = True) -> nn.Module:
        # The weights also give the architecture, so they are read even when not pretrained.
        return efficientnet_lite.efficientnet_lite(name, num_classes, weights_file)

    return build


MEMBERS: dict[str, Member] = {
    "vgg19": Member(
        "vgg19",
        _torchvision(tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1, _vgg_head),
        IMAGENET_MEAN,
        IMAGENET_STD,
        ("classifier.6.",),
        "classifier.6",
        224,
        19_600,
    ),
    "resnet50": Member(
        "resnet50",
        _torchvision(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2, _resnet_head),
        IMAGENET_MEAN,
        IMAGENET_STD,
        ("fc.",),
        "fc",
        224,
        4_100,
    ),
    "mobilenet_v3_large": Member(
        "mobilenet_v3_large",
        _torchvision(tvm.mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V2, _mobilenet_head),
        IMAGENET_MEAN,
        IMAGENET_STD,
        ("classifier.3.",),
        "classifier.3",
        224,
        220,
    ),
    **{
        name: Member(
            name,
            _lite(name),
            efficientnet_lite.MEAN,
            efficientnet_lite.STD,
            ("_fc.",),
            "_fc",
            efficientnet_lite.INPUT_SIZES[name],
            efficientnet_lite.MFLOPS[name],
        )
        for name in efficientnet_lite.PACKAGES
    },
}


def for_inference(model: nn.Module) -> nn.Module:
    """The model to answer with: batch norms folded into their convolutions where the architecture allows."""
    if isinstance(model, efficientnet_lite.EfficientNetLite):
        return efficientnet_lite.fused_for_inference(model)
    return model.eval()


def get_member(name: str) -> Member:
    """Returns the member registered as `name`; an unknown name lists the valid ones."""
    if name not in MEMBERS:
        raise ConfigError(f"unknown ensemble member '{name}'; valid members: {', '.join(sorted(MEMBERS))}")
    return MEMBERS[name]
