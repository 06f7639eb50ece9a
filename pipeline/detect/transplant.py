"""`transplant`: how far an image's most telling region moves the embeddings of other, clean images.

The mirror of `occlusion`: hiding a trigger moves its own image's embedding; pasting it onto another image takes
that image's embedding over (the attack's success rate measures exactly this). The window that moved the image's
embedding most when occluded (pipeline.detect.occlusion) is pasted, at the same place, onto each of RECIPIENTS
clean recipient images (taken from the decoder's auxiliary training images and kept in its reference); the score
is the mean cosine distance of each pasted recipient's embedding to the recipient's own. A clean window of the
same size covers a fifth of the recipient and leaves most of its content, so it moves the recipient far less.
It costs RECIPIENTS more encoder passes per image, on top of occlusion's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.detect.occlusion import Windows
from pipeline.encoders import Encoder

RECIPIENTS = 8         # clean recipient images a window is pasted onto


@torch.no_grad()
def transplant_scores(encoder: Encoder, norm: torch.Tensor, windows: Windows, recipients: torch.Tensor) -> torch.Tensor:
    """`norm`: (B, 3, S, S) preprocessed images; `windows`: their occlusion windows; `recipients`: (R, H, W, 3)
    uint8 clean images -> (B,) float32 mean cosine move of the recipients under each image's window."""
    rec = encoder.preprocess(recipients.to(norm.device))                                # (R, 3, S, S)
    own = F.normalize(encoder(rec).float(), dim=1)                                       # (R, D)
    inside = windows.mask()                                                              # (B, 1, S, S)
    moves = []
    for k in range(len(rec)):
        pasted = rec[k:k + 1] * (1 - inside) + norm * inside                             # (B, 3, S, S)
        e = F.normalize(encoder(pasted.to(norm.dtype)).float(), dim=1)
        moves.append(1 - e @ own[k])                                                     # (B,)
    return torch.stack(moves, 1).mean(1).float()
