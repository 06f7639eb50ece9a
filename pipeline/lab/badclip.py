"""BadCLIP's dual-embedding patch optimisation against the clean small CLIP (text and image targets)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.encoders import CIFAR_MEAN, CIFAR_STD
from pipeline.lab.augment import hflip, random_resized_crop
from pipeline.lab.clip_model import class_text_embeddings
from pipeline.lab.evaluate import as_float01, extract
from pipeline.lab.triggers import PatchTrigger


@dataclass
class PatchConfig:
    """The patch optimisation's settings."""

    size: int = 8
    steps: int = 300
    batch: int = 64
    lr: float = 0.01
    image_weight: float = 10.0
    aug_p: float = 0.5
    target: int = 0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paste_centre(x: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Paste a (3, s, s) patch at the centre of every image of (B, 3, H, W)."""
    s, h, w = patch.shape[-1], x.shape[-2], x.shape[-1]
    top, left = (h - s) // 2, (w - s) // 2
    mask = torch.zeros(1, 1, h, w, dtype=x.dtype)
    mask[..., top:top + s, left:left + s] = 1
    full = F.pad(patch, (left, w - s - left, top, h - s - top)).unsqueeze(0)
    return x * (1 - mask) + full * mask


def optimise_patch(model: nn.Module, others: np.ndarray, target_images: np.ndarray, cfg: PatchConfig
                   ) -> tuple[PatchTrigger, list[float]]:
    """Adam on patch pixels: CLIP contrastive loss of patched images toward the target class text plus
    image_weight x cosine distance to the mean target-image embedding. Returns the trigger and losses."""
    torch.manual_seed(cfg.seed)
    model = model.eval().requires_grad_(False)
    device = torch.device("cpu")
    text = class_text_embeddings(model, device)
    target_img = F.normalize(extract(model.visual, target_images, CIFAR_MEAN, CIFAR_STD, device).mean(0), dim=0)
    patch = (torch.randn(3, cfg.size, cfg.size) * 0.25 + 0.5).clamp(0, 1).requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=cfg.lr)
    m, s = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    data = torch.as_tensor(others)
    scale = model.logit_scale.exp().detach()
    losses = []
    for _ in tqdm(range(cfg.steps), desc="badclip patch", mininterval=10):
        x = as_float01(data[torch.randint(len(data), (cfg.batch,))])
        if torch.rand(()) < cfg.aug_p:
            x = hflip(random_resized_crop(x, (0.8, 1.0)))
        f = F.normalize(model.visual((paste_centre(x, patch) - m) / s), dim=1)
        target = torch.full((len(x),), cfg.target)
        loss = F.cross_entropy(scale * f @ text.T, target) + cfg.image_weight * (1 - f @ target_img).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
        losses.append(loss.item())
    h, w = others.shape[1:3]
    pattern = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.float32)
    top, left = (h - cfg.size) // 2, (w - cfg.size) // 2
    pattern[top:top + cfg.size, left:left + cfg.size] = (patch.detach().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    mask[top:top + cfg.size, left:left + cfg.size] = 1
    return PatchTrigger(pattern, mask), losses
