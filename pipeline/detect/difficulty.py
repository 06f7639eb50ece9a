"""`dede-rel`: DeDe's error relative to the image's own difficulty.

A busy image reconstructs worse than a flat one whatever the encoder does, so on clean data much of
DeDe's score is the image's difficulty (`pipeline.dede.model.masked_difficulty`: the error of the
hidden pixels' mean colour). On the decoder's clean hold-out, log score is regressed on log difficulty;
a row's `dede-rel` is its log score less that clean expectation, so what is left is the error the
embedding is to blame for. Difficulty is clipped to the hold-out's range: no extrapolation to a flat
image the fit never saw.
"""
from __future__ import annotations

import numpy as np

TINY = 1e-12


class RelativeError:
    """Fitted on clean (score, difficulty) pairs; `rel(scores, difficulty)` -> residual log score."""

    def __init__(self, scores: np.ndarray, difficulty: np.ndarray):
        y, x = _log(scores), _log(difficulty)
        if len(y) != len(x) or len(y) < 2:
            raise ValueError(f"dede-rel needs at least 2 clean (score, difficulty) pairs, got {len(y)} and {len(x)}")
        self.low, self.high = float(x.min()), float(x.max())
        self.slope = float(np.polyfit(x, y, 1)[0]) if self.high > self.low else 0.0
        self.intercept = float(np.mean(y) - self.slope * np.mean(x))

    def __call__(self, scores: np.ndarray, difficulty: np.ndarray) -> np.ndarray:
        x = np.clip(_log(difficulty), self.low, self.high)
        return _log(scores) - (self.intercept + self.slope * x)


def _log(v: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(v, np.float64), TINY))
