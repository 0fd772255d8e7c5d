"""Batched augmentation and normalization on the model's device.

One affine resampling per batch does every photo's random resized crop and flip, and a few
tensor operations its colour changes: on a GPU this costs next to nothing, where the same work
per photo in Python kept the GPU waiting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# RandomResizedCrop's ranges, a little narrower in scale: a product photo cropped to a tenth of
# its area often no longer shows the product.
SCALE = (0.35, 1.0)
RATIO = (3 / 4, 4 / 3)
BRIGHTNESS, CONTRAST, SATURATION = 0.3, 0.3, 0.2


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 normalized, laid out channels-last (faster convolutions)."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    x = (x.float().div_(255) - m) / s
    return x.contiguous(memory_format=torch.channels_last)


def _uniform(n: int, low: float, high: float, device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=device, generator=gen) * (high - low) + low


def augment(
    x: torch.Tensor,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 squares (N, 3, R, R) -> normalized (N, 3, size, size): random resized crop, flip, colour."""
    n, dev = x.shape[0], x.device
    x = x.float().div_(255)
    area = _uniform(n, *SCALE, dev, gen)
    aspect = torch.exp(_uniform(n, math.log(RATIO[0]), math.log(RATIO[1]), dev, gen))
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width and height as shares of the side
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = _uniform(n, -1, 1, dev, gen) * (1 - w)  # crop centre, in the [-1, 1] coordinates of affine_grid
    cy = _uniform(n, -1, 1, dev, gen) * (1 - h)
    flip = torch.where(torch.rand(n, device=dev, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # Colour: customers' rooms differ in light and white balance.
    brightness = _uniform(n, 1 - BRIGHTNESS, 1 + BRIGHTNESS, dev, gen).view(n, 1, 1, 1)
    contrast = _uniform(n, 1 - CONTRAST, 1 + CONTRAST, dev, gen).view(n, 1, 1, 1)
    saturation = _uniform(n, 1 - SATURATION, 1 + SATURATION, dev, gen).view(n, 1, 1, 1)
    x = x * brightness
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - grey.mean((2, 3), keepdim=True)) * contrast + grey.mean((2, 3), keepdim=True)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = ((x - grey) * saturation + grey).clamp_(0, 1)
    m = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    s = torch.tensor(std, device=dev).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


class AugmentingCollate:
    """Stacks a batch and augments it in the loader's worker process: on a CPU, where the model
    has the cores to itself, the augmentation then overlaps its step instead of delaying it."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size, self.mean, self.std = size, mean, std

    def __call__(self, batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([photo for photo, _ in batch])
        y = torch.tensor([label for _, label in batch])
        # The worker's own random stream (DataLoader seeds each worker from the loader's generator).
        return augment(x, self.size, self.mean, self.std), y
