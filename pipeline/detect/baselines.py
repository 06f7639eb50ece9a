"""Simple embedding-space baselines: embedding norm, spectral signature, isolation forest."""
from __future__ import annotations

import numpy as np


def embedding_norm(x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """|log(norm / reference median norm)|: triggered features often come out longer or shorter."""
    n = np.linalg.norm(np.asarray(x, np.float64), axis=1)
    ref = n if reference is None else np.linalg.norm(np.asarray(reference, np.float64), axis=1)
    return np.abs(np.log(n + 1e-12) - np.median(np.log(ref + 1e-12)))


def spectral_signature(x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Squared projection on the top singular vector of the centred reference (Tran et al. 2018)."""
    x = np.asarray(x, np.float64)
    ref = x if reference is None else np.asarray(reference, np.float64)
    mean = ref.mean(0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    return ((x - mean) @ vt[0]) ** 2


def isolation_forest(x: np.ndarray, reference: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """scikit-learn's IsolationForest anomaly score (higher = more isolated), fit on the reference."""
    from sklearn.ensemble import IsolationForest

    x = np.asarray(x, np.float32)
    ref = x if reference is None else np.asarray(reference, np.float32)
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(ref)
    return -forest.score_samples(x)
