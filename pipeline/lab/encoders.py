"""The lab's encoder specs: `lab:simclr-r18@CKPT` (width read from the checkpoint) and `lab:clip-tiny@CKPT`."""
from __future__ import annotations

from torch import nn

from pipeline.checkpoints import load_state_dict
from pipeline.encoders import CIFAR_MEAN, CIFAR_STD, Encoder, EncoderSpec, register_lab_encoder
from pipeline.models.resnet_cifar import CifarResNet


def _backbone_state(spec: EncoderSpec, prefix: str) -> tuple[dict, str | None]:
    """The checkpoint's tensors under `prefix` (prefix stripped) and its sha256; empty without a checkpoint."""
    if not spec.checkpoint:
        return {}, None
    sd, sha = load_state_dict(spec.checkpoint)
    if any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd, sha


def _load_strict(module: nn.Module, sd: dict, spec: EncoderSpec) -> None:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {spec.checkpoint} does not fit lab:{spec.name}: {str(e).splitlines()[1].strip()}") from None


@register_lab_encoder("simclr-r18")
def simclr_r18(spec: EncoderSpec) -> Encoder:
    """SimCLR CIFAR ResNet-18; the pooled backbone feature, CIFAR normalisation, 32 px."""
    sd, sha = _backbone_state(spec, "backbone.")
    width = sd["conv1.weight"].shape[0] / 64 if sd else 1.0
    backbone = CifarResNet("resnet18", width)
    if sd:
        _load_strict(backbone, sd, spec)
    return Encoder(backbone, spec, backbone.out_dim, 32, CIFAR_MEAN, CIFAR_STD, sha)


@register_lab_encoder("clip-tiny")
def clip_tiny(spec: EncoderSpec) -> Encoder:
    """The small CLIP's image tower; the image embedding, CIFAR normalisation, 32 px."""
    from pipeline.lab.clip_model import ImageTower, create_clip

    model = create_clip()
    sd, sha = _backbone_state(spec, "")
    if sd:
        _load_strict(model, sd, spec)
    return Encoder(ImageTower(model.visual), spec, model.visual.output_dim, 32, CIFAR_MEAN, CIFAR_STD, sha)
