"""SimCLR augmentations on whole batches of float tensors (B, 3, H, W) in [0, 1], with torch ops.

RandomResizedCrop, horizontal flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 and grayscale with
p 0.2, as in BadEncoder's pre-training, but drawn per image on a batch instead of per PIL image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * _LUMA.to(x).view(1, 3, 1, 1)).sum(1, keepdim=True)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop a random area share in `scale` with aspect in `ratio` from each image, resized back to H x W."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(*scale)
    logr = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b) * (1 - w) + w / 2) * 2 - 1
    cy = (torch.rand(b) * (1 - h) + h / 2) * 2 - 1
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability p."""
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _hue_rotate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `shift` turns (B,) through the YIQ chroma plane."""
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]).to(x)
    inv = torch.linalg.inv(yiq)
    a = shift * 2 * math.pi
    cos, sin = torch.cos(a), torch.sin(a)
    rot = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = inv @ rot @ yiq                                    # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def color_jitter(x: torch.Tensor, strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
                 p: float = 0.8) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter, applied to each image with probability p."""
    b = x.shape[0]
    bri, con, sat, hue = strength

    def factor(s: float) -> torch.Tensor:
        return torch.empty(b, 1, 1, 1, device=x.device).uniform_(max(0.0, 1 - s), 1 + s)

    y = (x * factor(bri)).clamp(0, 1)
    mean = _gray(y).mean(dim=(2, 3), keepdim=True)
    y = ((y - mean) * factor(con) + mean).clamp(0, 1)
    g = _gray(y)
    y = ((y - g) * factor(sat) + g).clamp(0, 1)
    y = _hue_rotate(y, torch.empty(b, device=x.device).uniform_(-hue, hue)).clamp(0, 1)
    keep = torch.rand(b, device=x.device) < p
    return torch.where(keep.view(-1, 1, 1, 1), y, x)


def random_grayscale(x: torch.Tensor, p: float = 0.2) -> torch.Tensor:
    """Replace each image by its luma (3 channels) with probability p."""
    g = _gray(x).expand_as(x)
    keep = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(keep.view(-1, 1, 1, 1), g, x)


@dataclass(frozen=True)
class SimCLRAugment:
    """The SimCLR view generator: crop, flip, colour jitter, grayscale on a [0, 1] batch."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = hflip(random_resized_crop(x, self.crop_scale))
        return random_grayscale(color_jitter(x, self.jitter, self.jitter_p), self.gray_p)
