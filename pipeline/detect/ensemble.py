"""Rank fusion: each detector's score mapped to its clean percentile, then fused by max, mean or fisher
(Fisher's method on the percentiles' upper tails: -sum log(1 - p), so one member far out in its clean
tail counts for more than several members a little above their median)."""
from __future__ import annotations

import numpy as np

FUSIONS = ("max", "mean", "fisher")
DEFAULT_FUSION = "fisher"  # with spec.DEFAULT_ENSEMBLE, ranked first on the lab's validation pools (results/fusion.md)
TAIL_FLOOR = 1e-6
"""fisher: the least upper-tail share a percentile counts as (a row beyond every clean score has p = 1)."""


def percentile(scores: np.ndarray, reference: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
    """Share of reference scores below each score, ties counted half (0..1; the empirical clean CDF).
    `leave_one_out`: `scores` are the reference's own rows, each ranked against the others only."""
    ref = np.sort(np.asarray(reference, np.float64))
    n = ref.size - (1 if leave_one_out else 0)
    if n < 1:
        raise ValueError(f"rank fusion needs a reference of at least {2 if leave_one_out else 1} scores")
    s = np.asarray(scores, np.float64)
    lo = np.searchsorted(ref, s, side="left")
    hi = np.searchsorted(ref, s, side="right") - (1 if leave_one_out else 0)
    return (lo + hi) / (2.0 * n)


def check_fusion(fusion: str) -> None:
    """ValueError unless `fusion` is one of FUSIONS."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


def fuse(parts: list[np.ndarray], fusion: str = "mean") -> np.ndarray:
    """Per row, the max or the mean of the detectors' percentiles, or fisher's -sum log(1 - p)."""
    check_fusion(fusion)
    if not parts:
        raise ValueError("rank fusion needs at least one score column")
    shapes = {np.shape(p) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"score columns differ in length: {sorted(shapes)}")
    if fusion == "fisher":
        return -np.log(np.maximum(1.0 - np.asarray(parts, np.float64), TAIL_FLOOR)).sum(axis=0)
    return np.max(parts, axis=0) if fusion == "max" else np.mean(parts, axis=0)


def rank_fusion(columns: dict[str, np.ndarray], references: dict[str, np.ndarray] | None = None,
                fusion: str = "mean", leave_one_out: bool = False) -> np.ndarray:
    """Fused percentile over the detectors. Each column is ranked against its reference (clean
    calibration scores) or, without one, against itself (in-corpus ranks); with `leave_one_out` every
    column is its own reference and each row is ranked against the others."""
    refs = references or {}
    return fuse([percentile(v, v if leave_one_out else refs.get(name, v), leave_one_out)
                 for name, v in columns.items()], fusion)


class Ensemble:
    """Rank fusion of named members against their clean (hold-out) scores: `ensemble(columns)`."""

    def __init__(self, references: dict[str, np.ndarray], fusion: str = DEFAULT_FUSION):
        check_fusion(fusion)
        self.references = {m: np.sort(np.asarray(r, np.float64)) for m, r in references.items()}
        self.fusion = fusion

    @property
    def members(self) -> list[str]:
        return list(self.references)

    def __call__(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return rank_fusion({m: columns[m] for m in self.references}, self.references, self.fusion)
