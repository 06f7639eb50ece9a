"""Simple embedding-space baselines: embedding norm, spectral signature, isolation forest.

Each is fitted on a reference once and then scores any rows: `Class(reference)(x)` (higher = more
suspicious); `ids` are accepted for the registry's one signature and not needed.
"""
from __future__ import annotations

import numpy as np


class EmbeddingNorm:
    """|log(norm / reference median norm)|: triggered features often come out longer or shorter."""

    def __init__(self, reference: np.ndarray, ids: np.ndarray | None = None):
        norms = np.linalg.norm(np.asarray(reference, np.float64), axis=1)
        self.median_log_norm = float(np.median(np.log(norms + 1e-12)))

    def __call__(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        n = np.linalg.norm(np.asarray(x, np.float64), axis=1)
        return np.abs(np.log(n + 1e-12) - self.median_log_norm)


class SpectralSignature:
    """Squared projection on the top singular vector of the centred reference (Tran et al. 2018)."""

    def __init__(self, reference: np.ndarray, ids: np.ndarray | None = None):
        ref = np.asarray(reference, np.float64)
        self.mean = ref.mean(0)
        self.top = np.linalg.svd(ref - self.mean, full_matrices=False)[2][0]

    def __call__(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) @ self.top) ** 2


class IsolationForestScore:
    """scikit-learn's IsolationForest anomaly score (higher = more isolated), fit on the reference."""

    def __init__(self, reference: np.ndarray, ids: np.ndarray | None = None, seed: int = 0):
        from sklearn.ensemble import IsolationForest

        self.forest = IsolationForest(n_estimators=200, random_state=seed).fit(np.asarray(reference, np.float32))

    def __call__(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        return -self.forest.score_samples(np.asarray(x, np.float32))
