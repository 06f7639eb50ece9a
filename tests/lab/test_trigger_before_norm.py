"""Triggers act on raw pixels, before the encoder's normalisation."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.encoders import CIFAR_MEAN, CIFAR_STD
from pipeline.lab.evaluate import extract
from pipeline.lab.triggers import square_trigger


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_extract_applies_the_trigger_then_normalises():
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    t = square_trigger()
    got = extract(_Flatten(), x, CIFAR_MEAN, CIFAR_STD, torch.device("cpu"), transform=t.apply)
    raw = torch.as_tensor(t.apply_uint8(x)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    expect = ((raw - mean) / std).flatten(1)
    assert torch.allclose(got, expect, atol=1e-5)
    # a white patch is white in pixel space: after normalisation it is (1 - mean) / std, not 1
    img = got.view(3, 3, 32, 32)
    assert torch.allclose(img[:, :, 25, 25], ((1 - mean) / std).view(1, 3).expand(3, 3), atol=1e-5)
