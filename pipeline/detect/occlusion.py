"""`occlusion`: how much one occluded region moves the victim's embedding, against how much the others do.

A patch trigger decides the embedding of the image it is pasted on: hiding it moves the embedding back to
the image's own content, while hiding any other part of the image barely moves it. A clean image has no
single region that matters that much more than the rest. The image is occluded by a grey square
(SIDE of its side) at STEPS x STEPS evenly spaced positions; each position's move is the cosine distance
of the occluded image's embedding to the image's own, and the score is the log of the largest move less the
mean log move (how far the most damaging region stands out from the typical one). Scale-free, so the victim's
embedding norms do not matter; it costs STEPS**2 more encoder passes per image. A trigger spread over the whole
image (a blend) has no such region, and a patch wider than the occluder is only partly hidden.
The most damaging window is also where `transplant` (pipeline.detect.transplant) looks for the trigger.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.encoders import Encoder

SIDE = 0.4375          # the occluder's side as a share of the encoder's input side (14 px of 32)
STEPS = 4              # positions per axis
FILL = 0.5             # the occluder's grey, in [0, 1] pixels
TINY = 1e-6


@dataclass
class Windows:
    """The occluder's windows over a batch and how far each moved each image's embedding."""

    size: int                      # the encoder's input side
    side: int                      # the window's side, in encoder input pixels
    corners: list[tuple[int, int]] # (row, column) of each window's top-left corner
    log_moves: torch.Tensor        # (B, P) log cosine distance of the occluded embedding to the image's own

    def scores(self) -> torch.Tensor:
        """(B,) the occlusion score: the largest log move less the mean log move."""
        return (self.log_moves.max(1).values - self.log_moves.mean(1)).float()

    def mask(self) -> torch.Tensor:
        """(B, 1, S, S) 1 inside each image's most damaging window, 0 elsewhere."""
        best = self.log_moves.argmax(1)
        out = torch.zeros(len(best), 1, self.size, self.size, device=self.log_moves.device)
        for j, (r, c) in enumerate(self.corners):
            out[best == j, :, r:r + self.side, c:c + self.side] = 1
        return out


def positions(size: int, side: int, steps: int = STEPS) -> list[int]:
    """Evenly spaced top-left offsets of a `side` window along an axis of `size` pixels, both edges included."""
    return sorted({int(round(v)) for v in np.linspace(0, size - side, steps)})


@torch.no_grad()
def occlude(encoder: Encoder, norm: torch.Tensor, e0: torch.Tensor, side: float = SIDE,
            steps: int = STEPS) -> Windows:
    """`norm`: (B, 3, S, S) preprocessed images; `e0`: (B, D) their unit embeddings -> each window's move."""
    s = encoder.input_size
    w = max(1, round(side * s))
    fill = (FILL - encoder.mean) / encoder.std                                           # (1, 3, 1, 1)
    corners = [(r, c) for r in positions(s, w, steps) for c in positions(s, w, steps)]
    moves = []
    for r, c in corners:
        occluded = norm.clone()
        occluded[:, :, r:r + w, c:c + w] = fill
        e = F.normalize(encoder(occluded).float(), dim=1)
        moves.append((1 - (e * e0).sum(1)).clamp_min(TINY).log())                       # (B,)
    return Windows(s, w, corners, torch.stack(moves, 1))

