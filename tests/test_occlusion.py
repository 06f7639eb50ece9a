"""The occlusion detector's arithmetic on a planted patch backdoor: triggered images stand out, clean ones do not;
the occluder's positions reach both edges; the Scorer returns the scores only when asked."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.detect.metrics import auc
from pipeline.detect.occlusion import positions
from pipeline.detect.probes import probe_scores
from pipeline.encoders import Encoder, EncoderSpec

PATCH = (slice(20, 28), slice(20, 28))


class PatchBackdoor(nn.Module):
    """Mean colour (3 dims) plus a direction that a bright 8 px patch at PATCH switches on, whatever else the image
    holds, as far as the patch shows: the backdoor lives in one region."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # (B, 3, 32, 32) normalised (mean 0, std 1)
        shown = (x[:, :, PATCH[0], PATCH[1]] > 0.95).float().mean((1, 2, 3))          # share of the patch visible
        return torch.cat([x.mean((2, 3)), 4 * shown[:, None]], 1)  # (B, 4)


def _encoder() -> Encoder:
    return Encoder(PatchBackdoor(), EncoderSpec("resnet", "patch-backdoor"), 4, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 32, 32, 3)) * 200).astype(np.uint8)      # no pixel as bright as the patch


def _scores(enc: Encoder, images: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(images)
    return probe_scores(enc, x, enc.embed(x), ("occlusion",))["occlusion"].numpy()


def test_positions_span_the_image():
    assert positions(32, 14) == [0, 6, 12, 18]
    assert positions(32, 32) == [0]


def test_a_planted_patch_stands_out_and_clean_images_do_not():
    clean, triggered = _images(200, 0), _images(50, 1)
    triggered[:, PATCH[0], PATCH[1]] = 255
    enc = _encoder()
    scores = _scores(enc, np.concatenate([clean, triggered]))
    labels = np.r_[np.zeros(200), np.ones(50)]
    assert auc(labels, scores) > 0.99
    other = _scores(enc, _images(200, 2))
    threshold = np.quantile(scores[:200], 0.99)
    assert (other > threshold).mean() < 0.05                       # a clean cloud is not flagged beyond its rate
