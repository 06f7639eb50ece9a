"""The lab's encoder specs, registered on import: `lab:simclr-r18@CKPT` (width read from the checkpoint), the same
network at 64 px (`lab:simclr-r18-64@CKPT`) and `lab:clip-tiny@CKPT`. The core finds this module through the
`dede_pipeline.encoders` entry point."""
from __future__ import annotations

from pipeline.encoders import (CIFAR_MEAN, CIFAR_STD, Encoder, EncoderSpec, OpenClipImageTower, checkpoint_state,
                               load_strict, register_encoder)
from pipeline.models.resnet_cifar import CifarResNet

SIMCLR_ENCODER = "simclr-r18"
SIMCLR_ENCODER_64 = "simclr-r18-64"
CLIP_ENCODER = "clip-tiny"


def _simclr(spec: EncoderSpec, size: int) -> Encoder:
    sd, sha = checkpoint_state(spec, ("backbone.",))
    backbone = CifarResNet("resnet18", sd["conv1.weight"].shape[0] / 64 if "conv1.weight" in sd else 1.0)
    if sd:
        load_strict(backbone, sd, spec)
    return Encoder(backbone, spec, backbone.out_dim, size, CIFAR_MEAN, CIFAR_STD, sha)


@register_encoder("lab", SIMCLR_ENCODER)
def simclr_r18(spec: EncoderSpec) -> Encoder:
    """SimCLR CIFAR ResNet-18; the pooled backbone feature, CIFAR normalisation, 32 px."""
    return _simclr(spec, 32)


@register_encoder("lab", SIMCLR_ENCODER_64)
def simclr_r18_64(spec: EncoderSpec) -> Encoder:
    """The same network fed 64 px images (fully convolutional, globally pooled): the lab's larger-input victim."""
    return _simclr(spec, 64)


@register_encoder("lab", CLIP_ENCODER)
def clip_tiny(spec: EncoderSpec) -> Encoder:
    """The small CLIP's image tower; the image embedding, CIFAR normalisation, 32 px."""
    from pipeline.lab.clip_model import create_clip

    visual = create_clip().visual
    sd, sha = checkpoint_state(spec, ("visual.",))
    if sd:
        load_strict(visual, sd, spec)
    return Encoder(OpenClipImageTower(visual), spec, visual.output_dim, 32, CIFAR_MEAN, CIFAR_STD, sha)
