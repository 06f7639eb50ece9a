"""Calibration of held-out clean scores and the threshold policies: `fpr:X`, `paper`, `gmm`, or a number."""
from __future__ import annotations

import numpy as np

QUANTILE_GRID = np.unique(np.round(np.concatenate([np.linspace(0, 0.9, 91), np.linspace(0.9, 1.0, 1001)]), 6))
POLICIES = "fpr:X (e.g. fpr:0.01), paper, gmm, or a number"


def calibration_summary(scores: np.ndarray, paper_threshold: float) -> dict:
    """Held-out clean scores -> the quantiles and moments stored in the decoder's config."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("cannot calibrate on zero held-out scores")
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std()),
        "q": [float(q) for q in QUANTILE_GRID],
        "values": [float(v) for v in np.quantile(s, QUANTILE_GRID)],
        "paper_threshold": float(paper_threshold),
    }


def fpr_threshold(calibration: dict, fpr: float) -> float:
    """The held-out quantile above which a share `fpr` of clean samples lies."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    return float(np.interp(1.0 - fpr, calibration["q"], calibration["values"]))


def gmm_threshold(scores: np.ndarray, seed: int = 0) -> float:
    """Two-component Gaussian mixture on log scores; the lowest score the high component owns."""
    from sklearn.mixture import GaussianMixture

    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 10:
        raise ValueError(f"gmm needs at least 10 scores, got {s.size}")
    x = np.log(np.maximum(s, 1e-12))[:, None]
    gm = GaussianMixture(2, random_state=seed).fit(x)
    high = int(np.argmax(gm.means_[:, 0]))
    grid = np.linspace(x.min(), x.max(), 4096)[:, None]
    owned = gm.predict_proba(grid)[:, high] > 0.5
    above_low_mean = grid[:, 0] > gm.means_[1 - high, 0]
    idx = np.flatnonzero(owned & above_low_mean)
    return float(np.exp(grid[idx[0], 0])) if idx.size else float(s.max())


def resolve_threshold(policy: str | float, calibration: dict, scores: np.ndarray | None = None) -> float:
    """A policy -> a score threshold (flag when score > threshold)."""
    if isinstance(policy, (int, float)):
        return float(policy)
    p = policy.strip().lower()
    try:
        return float(p)
    except ValueError:
        pass
    if p.startswith("fpr:"):
        try:
            return fpr_threshold(calibration, float(p[4:]))
        except ValueError as e:
            raise ValueError(f"bad threshold policy {policy!r}: {e}") from None
    if p == "paper":
        return float(calibration["paper_threshold"])
    if p == "gmm":
        if scores is None:
            raise ValueError("the gmm policy needs the run's scores")
        return gmm_threshold(scores)
    raise ValueError(f"unknown threshold policy {policy!r}; use {POLICIES}")


def needs_scores(policy: str | float) -> bool:
    """True when the threshold can only be fixed after the whole corpus is scored."""
    return isinstance(policy, str) and policy.strip().lower() == "gmm"
