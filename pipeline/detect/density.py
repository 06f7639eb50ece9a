"""Local-density scores on embeddings (Huang et al., ICLR 2025): k-distance, SLOF and DAO.

Each compares a sample's k-th neighbour distance with its neighbours' own. The paper's direction is
`sparse` (isolated = suspicious: poisoned CLIP training pairs); encoder backdoors collapse triggered
inputs onto one point, so `dense` (crowded = suspicious) and `both` (either way) are offered too.
Higher score = more suspicious, always.
"""
from __future__ import annotations

import numpy as np

from pipeline.detect.knn import knn

DIRECTIONS = ("sparse", "dense", "both")
EPS = 1e-12
NONFINITE = 1000.0          # the reference code's value for a NaN/inf score


def _directed(log_ratio: np.ndarray, direction: str) -> np.ndarray:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    s = {"sparse": log_ratio, "dense": -log_ratio, "both": np.abs(log_ratio)}[direction]
    return np.where(np.isfinite(s), s, NONFINITE)


def _neighbourhoods(x: np.ndarray, reference: np.ndarray | None, k: int):
    """Query k-NN distances/indices, and each reference row's own k-NN distances (self excluded)."""
    dist, idx = knn(x, reference, k)
    ref_dist = dist if reference is None else knn(reference, None, k)[0]
    return dist, idx, ref_dist


def k_distance(x: np.ndarray, reference: np.ndarray | None = None, k: int = 16,
               direction: str = "sparse") -> np.ndarray:
    """log of the distance to the k-th neighbour, relative to the reference's median k-distance."""
    dist, _, ref_dist = _neighbourhoods(x, reference, k)
    log_ratio = np.log(dist[:, -1] + EPS) - np.median(np.log(ref_dist[:, -1] + EPS))
    return _directed(log_ratio, direction)


def slof(x: np.ndarray, reference: np.ndarray | None = None, k: int = 16, direction: str = "sparse") -> np.ndarray:
    """Simplified LOF: log of mean over the k neighbours j of a_k(x) / k-distance(j)."""
    dist, idx, ref_dist = _neighbourhoods(x, reference, k)
    ratio = (dist[:, -1:] + EPS) / (ref_dist[idx, -1] + EPS)
    return _directed(np.log(ratio.mean(1)), direction)


def lid_mle(dist: np.ndarray) -> np.ndarray:
    """Local intrinsic dimension per row from its ascending k-NN distances (maximum likelihood)."""
    logs = np.log((dist + EPS) / (dist[:, -1:] + EPS))
    with np.errstate(divide="ignore"):
        return -dist.shape[1] / np.minimum(logs.sum(1), -EPS)


def dao(x: np.ndarray, reference: np.ndarray | None = None, k: int = 16, direction: str = "sparse") -> np.ndarray:
    """Dimensionality-aware outlier score: mean over neighbours j of LID(j) * log(a_k(x) / k-distance(j))."""
    dist, idx, ref_dist = _neighbourhoods(x, reference, k)
    lid = lid_mle(ref_dist)
    terms = lid[idx] * np.log((dist[:, -1:] + EPS) / (ref_dist[idx, -1] + EPS))
    return _directed(terms.mean(1), direction)
