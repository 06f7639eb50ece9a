"""The small CLIP: an open_clip custom model config (ViT at 32 px, small text tower), tokenizer, captions,
zero-shot classification. The config file's stem is the model name open_clip registers it under."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.corpus.cifar import CLASSES

CLIP_MODEL = "clip-tiny-32"
CONFIG_FILE = Path(__file__).with_name(f"{CLIP_MODEL}.json")

TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
    "a dark photo of a {}.", "a low resolution photo of a {}.", "a cropped photo of a {}.",
    "a good photo of a {}.", "a photo of the small {}.", "a photo of the big {}.", "a pixelated photo of the {}.",
    "a jpeg corrupted photo of a {}.", "itap of a {}.", "a photo of my {}.", "art of the {}.", "a picture of a {}.",
)


def _register() -> None:
    import open_clip

    if CLIP_MODEL not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_FILE)


def create_clip() -> nn.Module:
    """A freshly initialised small CLIP (open_clip.CLIP) from the custom config."""
    import open_clip

    _register()
    return open_clip.create_model(CLIP_MODEL, pretrained=None)


def tokenizer() -> Callable[..., torch.Tensor]:
    """open_clip's BPE tokenizer at the config's context length."""
    import open_clip

    _register()
    return open_clip.get_tokenizer(CLIP_MODEL)


@torch.no_grad()
def class_text_embeddings(model: nn.Module, device: torch.device) -> torch.Tensor:
    """(10, D) unit text embeddings per class, averaged over all templates (zero-shot classifier)."""
    tok = tokenizer()
    was = model.training
    model.eval()
    out = []
    for name in CLASSES:
        e = F.normalize(model.encode_text(tok([t.format(name) for t in TEMPLATES]).to(device)).float(), dim=-1)
        out.append(F.normalize(e.mean(0), dim=-1))
    model.train(was)
    return torch.stack(out).cpu()


def zero_shot_predict(image_features: torch.Tensor, text_classes: torch.Tensor) -> torch.Tensor:
    """Class index of the nearest class text embedding for each image feature."""
    return (F.normalize(image_features, dim=-1) @ text_classes.T).argmax(1)

