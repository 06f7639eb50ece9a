"""Frozen victim encoders built from a spec string `KIND:NAME[@CHECKPOINT]`: the registry and its adapters.

The core registers kinds `resnet` (torchvision ResNets and the CIFAR variant) and `openclip` (an
open_clip image tower by model name). Plugins register more with `register_encoder`; they are
imported when a spec names a kind or name nobody registered, from the modules listed under the
entry-point group `dede_pipeline.encoders` (the lab's `lab:` encoders come that way). Every adapter
owns its preprocessing and reports `embed_dim` and `input_size`. `create_encoder` is the one entry point.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.checkpoints import load_state_dict
from pipeline.errors import BadInput

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PLUGIN_GROUP = "dede_pipeline.encoders"
DISTRIBUTION = "dede-pipeline"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed `KIND:NAME[@CHECKPOINT]`."""

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
    if kind not in _kinds():
        load_plugins()
    if kind not in _kinds():
        raise ValueError(f"unknown encoder kind {kind!r} in {spec!r}; known kinds: {', '.join(sorted(_kinds()))}")
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


def checkpoint_state(spec: EncoderSpec, strip_prefixes: tuple[str, ...] = ()
                     ) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors of spec.checkpoint and the file's sha256 (({}, None) without a checkpoint). The first
    prefix some key carries is stripped, and keys without it dropped (a backbone out of a whole model)."""
    if not spec.checkpoint:
        return {}, None
    sd, sha = load_state_dict(spec.checkpoint)
    for p in strip_prefixes:
        if any(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}, sha
    return sd, sha


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], spec: EncoderSpec) -> None:
    """Load `state` into `module` (strict); a one-line ValueError naming the spec when it does not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = lines[1] if len(lines) > 1 else lines[0]
        raise ValueError(f"checkpoint {spec.checkpoint} does not fit {spec.kind}:{spec.name}: {first}") from None


class OpenClipImageTower(nn.Module):
    """An open_clip image tower as the encoder backbone: normalised images -> the (un-normalised) image embedding."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out


Builder = Callable[[EncoderSpec], Encoder]
_BUILDERS: dict[tuple[str, str | None], Builder] = {}


def register_encoder(kind: str, name: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator: build `KIND:NAME[@CKPT]` with the decorated function (spec -> Encoder); without a
    name, every NAME of KIND that has no builder of its own."""

    def deco(fn: Builder) -> Builder:
        _BUILDERS[(kind, name)] = fn
        return fn

    return deco


def _kinds() -> set[str]:
    return {kind for kind, _ in _BUILDERS}


def _plugin_modules() -> list[str]:
    """Modules of the entry-point group: those of installed distributions, plus those this checkout's
    pyproject.toml declares (a checkout runs uninstalled, e.g. `python jobs/X.py` under `ray job submit`,
    or beside stale metadata)."""
    values = [ep.value for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)]
    if PYPROJECT.exists():
        project = tomllib.loads(PYPROJECT.read_text()).get("project", {})
        if project.get("name") == DISTRIBUTION:
            values += project.get("entry-points", {}).get(PLUGIN_GROUP, {}).values()
    return list(dict.fromkeys(v.split(":")[0].strip() for v in values))


@functools.cache
def load_plugins() -> None:
    """Import every encoder plugin module once; each registers its encoders on import."""
    for module in _plugin_modules():
        importlib.import_module(module)


def _find(spec: EncoderSpec) -> Builder | None:
    return _BUILDERS.get((spec.kind, spec.name)) or _BUILDERS.get((spec.kind, None))


def _builder(spec: EncoderSpec) -> Builder:
    """The builder of a spec: by kind and name, else the kind's own; plugins are loaded for unknown ones."""
    fn = _find(spec)
    if fn is None:
        load_plugins()
        fn = _find(spec)
    if fn is None:
        known = sorted(name for kind, name in _BUILDERS if kind == spec.kind and name)
        raise ValueError(f"unknown {spec.kind} encoder {spec.name!r}; registered: {', '.join(known) or 'none'}")
    return fn


@register_encoder("resnet")
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
    sd, sha = checkpoint_state(spec, ("backbone.", "f.", "encoder."))
    if sd:
        load_strict(backbone, sd, spec)
    return Encoder(backbone, spec, dim, size, mean, std, sha)


@register_encoder("openclip")
def _build_openclip(spec: EncoderSpec) -> Encoder:
    import open_clip

    if spec.name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {spec.name!r} (see open_clip.list_models())")
    model = open_clip.create_model(spec.name, pretrained=None)
    visual = model.visual
    sd, sha = checkpoint_state(spec, ("visual.",))
    if sd:
        load_strict(visual, sd, spec)
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    wrapped = OpenClipImageTower(visual)
    with torch.no_grad():
        dim = wrapped.eval()(torch.zeros(1, 3, size, size)).shape[-1]
    return Encoder(wrapped, spec, dim, size, tuple(mean), tuple(std), sha)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None): CUDA when available, else the CPU; otherwise the device named. A one-line
    BadInput for a bad name, or for CUDA asked for where none is visible."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BadInput(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {device} asked for, but no CUDA device is visible")
    return dev


def create_encoder(spec: str | EncoderSpec, device: str | torch.device | None = None) -> Encoder:
    """Build the frozen encoder a spec names, on `device` (see resolve_device; CUDA when available by default)."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    # random init is seeded from the spec, so every process (actor, resumed run) builds the same weights
    seed = int.from_bytes(hashlib.sha256(f"{s.kind}:{s.name}".encode()).digest()[:4], "little")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = _builder(s)(s)
    return enc.to(resolve_device(device))
