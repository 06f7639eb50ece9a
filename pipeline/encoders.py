"""Frozen victim encoders built from a spec string `KIND:NAME[@CHECKPOINT]`.

Kinds: `resnet` (torchvision ResNets and the CIFAR variant), `openclip` (an open_clip image tower by
model name) and `lab` (encoders the lab registers). Every adapter owns its preprocessing and reports
`embed_dim` and `input_size`. `create_encoder` is the one entry point.
"""
from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.checkpoints import load_state_dict

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    kind: str
    name: str
    checkpoint: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" + (f"@{self.checkpoint}" if self.checkpoint else "")


def parse_spec(spec: str) -> EncoderSpec:
    """`KIND:NAME[@CHECKPOINT]` -> EncoderSpec; a one-line ValueError on anything else."""
    m = re.fullmatch(r"([a-z_]+):([^@\s]+)(?:@(.+))?", spec.strip())
    if not m:
        raise ValueError(f"bad encoder spec {spec!r}: expected KIND:NAME[@CHECKPOINT], e.g. resnet:resnet18-cifar")
    kind, name, ckpt = m.groups()
    if kind not in _KINDS:
        raise ValueError(f"unknown encoder kind {kind!r} in {spec!r}; known kinds: {', '.join(sorted(_KINDS))}")
    return EncoderSpec(kind, name, ckpt)


class Encoder(nn.Module):
    """A frozen image encoder plus its preprocessing: uint8 images in, (B, embed_dim) features out."""

    def __init__(self, backbone: nn.Module, spec: EncoderSpec, embed_dim: int, input_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], checkpoint_sha256: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.embed_dim = int(embed_dim)
        self.input_size = int(input_size)
        self.checkpoint_sha256 = checkpoint_sha256
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Encoder":
        return super().train(False)  # frozen: BatchNorm and dropout always in eval mode

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 or (B, 3, H, W) float in [0, 1] -> (B, 3, S, S) normalised, S = input_size."""
        x = to_float01(images).to(self.device)
        x = resize_square(x, self.input_size)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised -> (B, embed_dim)."""
        return self.backbone(x).float()

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0,1] images -> (B, embed_dim) float32 features."""
        return self.forward(self.preprocess(images))


def to_float01(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 or (B, 3, H, W) float -> (B, 3, H, W) float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float().div_(255.0)
    return images.float()


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (B, 3, H, W) to (B, 3, size, size); a no-op when it already is."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _load_into(module: nn.Module, spec: EncoderSpec, strip_prefixes: tuple[str, ...] = ()) -> str | None:
    """Load spec.checkpoint into module (strict); returns the file's sha256 or None without one."""
    if not spec.checkpoint:
        return None
    sd, sha = load_state_dict(spec.checkpoint)
    for p in strip_prefixes:
        if any(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
            break
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e).splitlines()[0])
        raise ValueError(f"checkpoint {spec.checkpoint} does not fit {spec.kind}:{spec.name}: {first}") from None
    return sha


def _build_resnet(spec: EncoderSpec) -> Encoder:
    m = re.fullmatch(r"(resnet\d+)(-cifar)?(?:-w([0-9.]+))?", spec.name)
    if not m:
        raise ValueError(f"unknown resnet {spec.name!r}: use e.g. resnet18-cifar, resnet18-cifar-w0.5, resnet50")
    depth, cifar, width = m.group(1), bool(m.group(2)), float(m.group(3) or 1.0)
    if cifar:
        from pipeline.models.resnet_cifar import CifarResNet

        backbone = CifarResNet(depth, width)
        dim, size, mean, std = backbone.out_dim, 32, CIFAR_MEAN, CIFAR_STD
    else:
        import torchvision

        if width != 1.0 or not hasattr(torchvision.models, depth):
            raise ValueError(f"unknown resnet {spec.name!r}: width multipliers exist only for -cifar")
        backbone = getattr(torchvision.models, depth)(weights=None)
        dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
        size, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD
    sha = _load_into(backbone, spec, strip_prefixes=("backbone.", "f.", "encoder."))
    return Encoder(backbone, spec, dim, size, mean, std, sha)


class _OpenClipVisual(nn.Module):
    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out


def _build_openclip(spec: EncoderSpec) -> Encoder:
    import open_clip

    if spec.name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {spec.name!r} (see open_clip.list_models())")
    model = open_clip.create_model(spec.name, pretrained=None)
    visual = model.visual
    sha = _load_into(visual, spec, strip_prefixes=("visual.",))
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    wrapped = _OpenClipVisual(visual)
    with torch.no_grad():
        dim = wrapped.eval()(torch.zeros(1, 3, size, size)).shape[-1]
    return Encoder(wrapped, spec, dim, size, tuple(mean), tuple(std), sha)


LabBuilder = Callable[[EncoderSpec], Encoder]
_LAB: dict[str, LabBuilder] = {}


def register_lab_encoder(name: str) -> Callable[[LabBuilder], LabBuilder]:
    """Decorator: make `lab:NAME[@CKPT]` build with the decorated function (spec -> Encoder)."""

    def deco(fn: LabBuilder) -> LabBuilder:
        _LAB[name] = fn
        return fn

    return deco


def _build_lab(spec: EncoderSpec) -> Encoder:
    if spec.name not in _LAB:
        try:
            importlib.import_module("pipeline.lab.encoders")  # registers the lab's encoders
        except ModuleNotFoundError:
            pass
    if spec.name not in _LAB:
        raise ValueError(f"unknown lab encoder {spec.name!r}; registered: {', '.join(sorted(_LAB)) or 'none'}")
    return _LAB[spec.name](spec)


_KINDS: dict[str, Callable[[EncoderSpec], Encoder]] = {
    "resnet": _build_resnet,
    "openclip": _build_openclip,
    "lab": _build_lab,
}


def create_encoder(spec: str | EncoderSpec, device: str | torch.device | None = None) -> Encoder:
    """Build the frozen encoder a spec names, on `device` (CUDA when available by default)."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    # random init is seeded from the spec, so every process (actor, resumed run) builds the same weights
    seed = int.from_bytes(hashlib.sha256(f"{s.kind}:{s.name}".encode()).digest()[:4], "little")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = _KINDS[s.kind](s)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return enc.to(dev)
