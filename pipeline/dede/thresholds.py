"""Calibration of held-out clean scores and the threshold policies: `fpr:X`, `paper`, `gmm`, or a number.

`parse_threshold` is the one reader of a `--threshold` text; `resolve_threshold` turns the parsed
policy into a finite score threshold (flag when score > threshold).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from pipeline.errors import BadInput

QUANTILE_GRID = np.unique(np.round(np.concatenate([np.linspace(0, 0.9, 91), np.linspace(0.9, 1.0, 1001)]), 6))
POLICIES = "fpr:X with 0 < X < 1 (e.g. fpr:0.01), paper, gmm, or a finite number >= 0"


@dataclass(frozen=True)
class Calibration:
    """Held-out clean scores as stored in the decoder's config: size, moments and quantiles."""

    n: int
    mean: float
    std: float
    q: list[float]                  # quantile levels, increasing in [0, 1]
    values: list[float]             # the held-out scores at those levels
    paper_threshold: float          # the paper's mean training loss, rescaled to the per-image score

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(n=int(d["n"]), mean=float(d["mean"]), std=float(d["std"]), q=[float(v) for v in d["q"]],
                   values=[float(v) for v in d["values"]], paper_threshold=float(d["paper_threshold"]))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ThresholdPolicy:
    """A parsed `--threshold`: a fixed number, a clean false-positive rate, the paper's rule, or a GMM fit."""

    kind: Literal["number", "fpr", "paper", "gmm"]
    value: float | None = None      # the number, or the fpr; None for paper and gmm

    @property
    def needs_scores(self) -> bool:
        """True when the threshold can only be fixed after the whole corpus is scored."""
        return self.kind == "gmm"

    @property
    def needs_calibration(self) -> bool:
        """True when the threshold comes from the decoder's held-out calibration."""
        return self.kind in ("fpr", "paper")

    def __str__(self) -> str:
        if self.kind == "fpr":
            return f"fpr:{self.value!r}"
        if self.kind == "number":
            return repr(self.value)
        return self.kind


def _bad(text: object, why: str) -> BadInput:
    return BadInput(f"--threshold {text!r} {why}; use {POLICIES}")


def parse_threshold(text: str | float | ThresholdPolicy) -> ThresholdPolicy:
    """`fpr:X`, `paper`, `gmm` or a number -> a policy; anything else (nan, inf, fpr outside (0, 1),
    a negative number, an unknown name) is a one-line BadInput naming --threshold."""
    if isinstance(text, ThresholdPolicy):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return _number(text, text)
    p = str(text).strip().lower()
    if p in ("paper", "gmm"):
        return ThresholdPolicy(p)
    if p.startswith("fpr:"):
        try:
            fpr = float(p[4:])
        except ValueError:
            raise _bad(text, "has no number after fpr:") from None
        if not 0.0 < fpr < 1.0:          # also false for nan
            raise _bad(text, "needs a false-positive rate strictly between 0 and 1")
        return ThresholdPolicy("fpr", fpr)
    try:
        value = float(p)
    except ValueError:
        raise _bad(text, "is not a known policy") from None
    return _number(text, value)


def _number(text: object, value: float) -> ThresholdPolicy:
    if not math.isfinite(value):
        raise _bad(text, "is not a finite number")
    if value < 0:
        raise _bad(text, "is negative (scores are sums of squares, so it would flag everything)")
    return ThresholdPolicy("number", float(value))


def threshold_arg(text: str) -> ThresholdPolicy:
    """`parse_threshold` for argparse's `type=`: the same checks, reported as a usage error."""
    try:
        return parse_threshold(text)
    except BadInput as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def calibration_summary(scores: np.ndarray, paper_threshold: float) -> Calibration:
    """Held-out clean scores -> the quantiles and moments stored in the decoder's config."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("cannot calibrate on zero held-out scores")
    return Calibration(n=int(s.size), mean=float(s.mean()), std=float(s.std()), q=[float(q) for q in QUANTILE_GRID],
                       values=[float(v) for v in np.quantile(s, QUANTILE_GRID)],
                       paper_threshold=float(paper_threshold))


def fpr_threshold(calibration: Calibration, fpr: float) -> float:
    """The held-out quantile above which a share `fpr` of clean samples lies."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    return float(np.interp(1.0 - fpr, calibration.q, calibration.values))


def gmm_threshold(scores: np.ndarray, seed: int = 0, log: bool = True) -> float:
    """Two-component Gaussian mixture on log scores (`log=False`: on the scores themselves, for
    detectors whose scores can be negative); the lowest score the high component owns."""
    from sklearn.mixture import GaussianMixture

    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 10:
        raise ValueError(f"gmm needs at least 10 scores, got {s.size}")
    x = (np.log(np.maximum(s, 1e-12)) if log else s)[:, None]
    gm = GaussianMixture(2, random_state=seed).fit(x)
    high = int(np.argmax(gm.means_[:, 0]))
    grid = np.linspace(x.min(), x.max(), 4096)[:, None]
    owned = gm.predict_proba(grid)[:, high] > 0.5
    above_low_mean = grid[:, 0] > gm.means_[1 - high, 0]
    idx = np.flatnonzero(owned & above_low_mean)
    if not idx.size:
        return float(s.max())
    return float(np.exp(grid[idx[0], 0])) if log else float(grid[idx[0], 0])


def resolve_threshold(policy: ThresholdPolicy | str | float, calibration: Calibration | None,
                      scores: np.ndarray | None = None, log_scores: bool = True) -> float:
    """A policy (parsed, or text for `parse_threshold`) -> a finite score threshold; BadInput when the
    policy cannot give one (no calibration, no scores, a non-finite result). `log_scores`: gmm fits
    log scores (DeDe's, always positive)."""
    p = parse_threshold(policy)
    if p.kind == "number":
        t = p.value
    elif p.kind == "gmm":
        if scores is None:
            raise BadInput("--threshold gmm needs the run's scores")
        try:
            t = gmm_threshold(scores, log=log_scores)
        except ValueError as e:
            raise BadInput(f"--threshold gmm: {e}") from None
    elif calibration is None:
        raise BadInput(f"--threshold {p} needs the decoder's calibration (config.json); pass --decoder")
    elif p.kind == "fpr":
        t = fpr_threshold(calibration, p.value)
    else:
        t = calibration.paper_threshold
    if not math.isfinite(t):
        raise BadInput(f"--threshold {p} gives {t}, not a finite number; retrain the decoder or use another policy")
    return float(t)


def needs_scores(policy: ThresholdPolicy | str | float) -> bool:
    """True when the threshold can only be fixed after the whole corpus is scored."""
    return parse_threshold(policy).needs_scores
