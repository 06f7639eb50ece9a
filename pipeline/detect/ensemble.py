"""Rank fusion: each detector's score mapped to its clean percentile, then averaged."""
from __future__ import annotations

import numpy as np


def percentile(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of reference scores strictly below each score (0..1; the empirical clean CDF)."""
    ref = np.sort(np.asarray(reference, np.float64))
    if ref.size == 0:
        raise ValueError("rank fusion needs a non-empty reference")
    lo = np.searchsorted(ref, scores, side="left")
    hi = np.searchsorted(ref, scores, side="right")
    return (lo + hi) / (2.0 * ref.size)


def rank_fusion(columns: dict[str, np.ndarray], references: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Mean percentile over the detectors. Each column is ranked against its reference (clean
    calibration scores) or, without one, against itself (in-corpus ranks)."""
    if not columns:
        raise ValueError("rank fusion needs at least one score column")
    refs = references or {}
    parts = [percentile(np.asarray(v, np.float64), refs.get(name, v)) for name, v in columns.items()]
    n = {p.shape for p in parts}
    if len(n) != 1:
        raise ValueError(f"score columns differ in length: {sorted(n)}")
    return np.mean(parts, axis=0)
