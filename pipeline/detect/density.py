"""Local-density scores on embeddings (Huang et al., ICLR 2025): k-distance, SLOF and DAO.

Each compares a sample's k-th neighbour distance with its neighbours' own. The paper's direction is
`sparse` (isolated = suspicious: poisoned CLIP training pairs); encoder backdoors collapse triggered
inputs onto one point, so `dense` (crowded = suspicious) and `both` (either way) are offered too.
Higher score = more suspicious, always.

`Neighbourhoods` fits a reference once (its index and every reference row's own k nearest neighbours);
`DensityScore` scores query rows against it, by id when the reference holds some of them.
"""
from __future__ import annotations

import numpy as np

from pipeline.detect.knn import KnnIndex

MEASURES = ("kdist", "slof", "dao")
DIRECTIONS = ("sparse", "dense", "both")
K = 16                      # neighbours
EPS = 1e-12
NONFINITE = 1000.0          # the reference code's value for a NaN/inf score


def _directed(log_ratio: np.ndarray, direction: str) -> np.ndarray:
    s = {"sparse": log_ratio, "dense": -log_ratio, "both": np.abs(log_ratio)}[direction]
    return np.where(np.isfinite(s), s, NONFINITE)


def lid_mle(dist: np.ndarray) -> np.ndarray:
    """Local intrinsic dimension per row from its ascending k-NN distances (maximum likelihood)."""
    logs = np.log((dist + EPS) / (dist[:, -1:] + EPS))
    with np.errstate(divide="ignore"):
        return -dist.shape[1] / np.minimum(logs.sum(1), -EPS)


class Neighbourhoods:
    """A reference set fitted for density scores: its exact k-NN index, and every reference row's own
    k nearest neighbours (itself excluded by id), their median log k-distance and their LID."""

    def __init__(self, reference: np.ndarray, k: int = K, ids: np.ndarray | None = None):
        self.k = k
        self.index = KnnIndex(reference, ids)
        self.dist, self.idx = self.index.search(self.index.rows, k, self.index.ids)
        self.median_log_kdist = float(np.median(np.log(self.dist[:, -1] + EPS)))
        self.lid = lid_mle(self.dist)
        order = np.argsort(self.index.ids, kind="stable")
        self._sorted_ids, self._order = self.index.ids[order], order

    def query(self, x: np.ndarray, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, reference positions) of the k nearest reference rows of each query row. A query
        whose id is a reference row's id is that row: it gets the row's own neighbourhood (itself left out)."""
        if ids is None:
            return self.index.search(x, self.k)
        ids = np.asarray(ids)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        known = self._sorted_ids[pos] == ids
        rows = self._order[pos[known]]
        dist = np.empty((len(ids), self.k))
        idx = np.empty((len(ids), self.k), np.int64)
        dist[known], idx[known] = self.dist[rows], self.idx[rows]
        if (~known).any():
            dist[~known], idx[~known] = self.index.search(np.asarray(x)[~known], self.k)
        return dist, idx


class DensityScore:
    """One density measure in one direction against fitted `Neighbourhoods`: `score(x, ids)`."""

    def __init__(self, measure: str, direction: str, hood: Neighbourhoods):
        if measure not in MEASURES or direction not in DIRECTIONS:
            raise ValueError(f"measure must be one of {MEASURES} and direction one of {DIRECTIONS}, "
                             f"got {measure!r}, {direction!r}")
        self.measure, self.direction, self.hood = measure, direction, hood

    def __call__(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        h = self.hood
        dist, idx = h.query(x, ids)
        if self.measure == "kdist":
            log_ratio = np.log(dist[:, -1] + EPS) - h.median_log_kdist
        elif self.measure == "slof":
            log_ratio = np.log(((dist[:, -1:] + EPS) / (h.dist[idx, -1] + EPS)).mean(1))
        else:
            log_ratio = (h.lid[idx] * np.log((dist[:, -1:] + EPS) / (h.dist[idx, -1] + EPS))).mean(1)
        return _directed(log_ratio, self.direction)


def _score(measure: str, x: np.ndarray, reference: np.ndarray | None, k: int, direction: str) -> np.ndarray:
    """In-corpus (`reference=None`: x is its own reference, each row's self-match excluded) or against a
    separate reference."""
    if reference is None:
        return DensityScore(measure, direction, Neighbourhoods(x, k))(x, np.arange(len(x)))
    return DensityScore(measure, direction, Neighbourhoods(reference, k))(x)


def k_distance(x: np.ndarray, reference: np.ndarray | None = None, k: int = K,
               direction: str = "sparse") -> np.ndarray:
    """log of the distance to the k-th neighbour, relative to the reference's median k-distance."""
    return _score("kdist", x, reference, k, direction)


def slof(x: np.ndarray, reference: np.ndarray | None = None, k: int = K, direction: str = "sparse") -> np.ndarray:
    """Simplified LOF: log of mean over the k neighbours j of a_k(x) / k-distance(j)."""
    return _score("slof", x, reference, k, direction)


def dao(x: np.ndarray, reference: np.ndarray | None = None, k: int = K, direction: str = "sparse") -> np.ndarray:
    """Dimensionality-aware outlier score: mean over neighbours j of LID(j) * log(a_k(x) / k-distance(j))."""
    return _score("dao", x, reference, k, direction)
