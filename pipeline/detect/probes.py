"""The image detectors the scoring stage computes from the images themselves (spec.IMAGE_DETECTORS): `occlusion`
and `transplant`, from one set of occlusion passes."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.detect.occlusion import occlude
from pipeline.detect.spec import OCCLUSION, TRANSPLANT
from pipeline.detect.transplant import transplant_scores
from pipeline.encoders import Encoder


@torch.no_grad()
def probe_scores(encoder: Encoder, images: torch.Tensor, emb: torch.Tensor, names: Sequence[str],
                 recipients: np.ndarray | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """(B, H, W, 3) uint8 or (B, 3, H, W) [0, 1] images with their (B, D) embeddings -> (B,) float32 scores of each
    image detector in `names`; `recipients`: the (R, H, W, 3) uint8 clean images transplant pastes onto."""
    if not names:
        return {}
    if TRANSPLANT in names and recipients is None:
        raise ValueError(f"{TRANSPLANT} needs its recipient images")
    norm = encoder.preprocess(images)                                                    # (B, 3, S, S)
    windows = occlude(encoder, norm, F.normalize(emb.float(), dim=1))
    out = {OCCLUSION: windows.scores()} if OCCLUSION in names else {}
    if TRANSPLANT in names:
        out[TRANSPLANT] = transplant_scores(encoder, norm, windows, torch.as_tensor(recipients))
    return out
