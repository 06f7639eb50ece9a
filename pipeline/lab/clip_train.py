"""Training the small CLIP on CIFAR-10 images with varied template captions (clean or poisoned pairs)."""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pipeline.corpus.cifar import CLASSES
from pipeline.encoders import CIFAR_MEAN, CIFAR_STD
from pipeline.lab.augment import hflip, random_resized_crop
from pipeline.lab.budget import TimedLoop
from pipeline.lab.clip_model import TEMPLATES, class_text_embeddings, create_clip, tokenizer, zero_shot_predict
from pipeline.lab.compute import autocast, to_input
from pipeline.lab.evaluate import Transform, accuracy, as_float01, attack_success, extract


@dataclass
class ClipConfig:
    """Everything that decides a small-CLIP training run (its hash names the cache entry)."""

    epochs: int = 10
    max_minutes: float = 50.0
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    crop_scale: tuple[float, float] = (0.9, 1.0)     # open_clip's training crop (AugmentationCfg.scale)
    hflip: bool = False                              # open_clip's training transform does not flip
    freeze_text: bool = False
    seed: int = 0
    monitor_every_minutes: float = 5.0
    monitor_test: int = 1000
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Captions = Callable[[np.ndarray], torch.Tensor]
"""Sample indices -> (len, context) caption token ids for one training step."""


def template_captions(labels: np.ndarray, seed: int) -> Captions:
    """Each draw a random template caption of the class labels[i] (the lab's varied in-memory captions)."""
    tok = tokenizer()
    tokens = torch.stack([tok([t.format(c) for t in TEMPLATES]) for c in CLASSES])   # (classes, templates, ctx)
    cap, rng = torch.as_tensor(labels), random.Random(seed)

    def draw(idx: np.ndarray) -> torch.Tensor:
        return tokens[cap[idx], torch.tensor([rng.randrange(len(TEMPLATES)) for _ in range(len(idx))])]

    return draw


def fixed_captions(texts: list[str]) -> Captions:
    """The caption each sample carries (a corpus's `.txt` members), tokenised once."""
    tokens = tokenizer()(texts)

    def draw(idx: np.ndarray) -> torch.Tensor:
        return tokens[torch.as_tensor(idx)]

    return draw


def zero_shot(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device,
              trigger: Transform | None = None, target: int = 0) -> dict[str, float]:
    """Zero-shot accuracy on clean images; with a trigger, ASR on triggered images of the other classes."""
    text = class_text_embeddings(model, device)
    y = torch.as_tensor(labels)
    out = {"zero_shot_ca": accuracy(zero_shot_predict(extract(model.visual, images, CIFAR_MEAN, CIFAR_STD, device), text), y)}
    if trigger is not None:
        keep = labels != target
        f = extract(model.visual, images[keep], CIFAR_MEAN, CIFAR_STD, device, transform=trigger)
        out["zero_shot_asr"] = attack_success(zero_shot_predict(f, text), y[keep], target)
    return {k: round(v, 4) for k, v in out.items()}


def train_clip(cfg: ClipConfig, images: np.ndarray, captions: Captions, test: np.ndarray,
               test_labels: np.ndarray, device: torch.device, init: dict[str, torch.Tensor] | None = None,
               curve_path: Path | None = None) -> tuple[nn.Module, list[dict[str, float]], float]:
    """Train on (images[i], captions([i])) pairs with open_clip's ClipLoss, from `init` weights when given;
    returns the model, the zero-shot monitor curve and training minutes."""
    from open_clip.loss import ClipLoss

    torch.manual_seed(cfg.seed)
    model = create_clip()
    if init is not None:
        model.load_state_dict(init)
    model = model.to(device).train()
    if cfg.freeze_text:
        for name, p in model.named_parameters():
            if not name.startswith("visual."):
                p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = ClipLoss()
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    mon_idx = np.random.default_rng(cfg.seed).choice(len(test), min(cfg.monitor_test, len(test)), replace=False)
    data = torch.as_tensor(images)

    def monitor() -> dict[str, float]:
        return {"zero_shot_ca": zero_shot(model, test[mon_idx], test_labels[mon_idx], device)["zero_shot_ca"]}

    loop = TimedLoop(len(images), cfg.batch, cfg.epochs, cfg.max_minutes, cfg.monitor_every_minutes, monitor,
                     "clip", curve_path)
    total = loop.total_steps         # warm-up, then cosine over the epochs (by step, not by time)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps)
                                              * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    for idx in loop:
        x = random_resized_crop(as_float01(data[idx]), tuple(cfg.crop_scale))
        x = hflip(x) if cfg.hflip else x
        text = captions(idx).to(device)
        with autocast(device):
            img_f = model.encode_image(to_input((x - mean) / std, device), normalize=True)
            txt_f = model.encode_text(text, normalize=True)
            loss = loss_fn(img_f.float(), txt_f.float(), model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loop.log(loss=f"{loss.item():.3f}")
    return model, loop.curve, loop.minutes
