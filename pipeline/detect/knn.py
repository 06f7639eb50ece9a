"""Exact k-nearest-neighbour distances with faiss (a flat L2 index; fits CPU memory up to millions of rows)."""
from __future__ import annotations

import numpy as np


def _as_f32(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    return x


def knn(query: np.ndarray, reference: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices), each (n, k), ascending L2 distances from every query row to its k nearest
    reference rows. With `reference=None` the query set is its own reference and each row's self-match
    is excluded."""
    import faiss

    q = _as_f32(query)
    self_ref = reference is None
    r = q if self_ref else _as_f32(reference)
    if r.shape[1] != q.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != reference dim {r.shape[1]}")
    k_eff = k + 1 if self_ref else k
    if k < 1 or k_eff > r.shape[0]:
        raise ValueError(f"k={k} needs at least {k_eff} reference rows, got {r.shape[0]}")
    index = faiss.IndexFlatL2(r.shape[1])
    index.add(r)
    d2, idx = index.search(q, k_eff)
    if self_ref:
        d2, idx = _drop_self(d2, idx)
    return np.sqrt(np.maximum(d2, 0.0)).astype(np.float64), idx


def _drop_self(d2: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (or, when duplicates hid it, its last column)."""
    n, kk = idx.shape
    own = idx == np.arange(n)[:, None]
    drop = np.where(own.any(1), own.argmax(1), kk - 1)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return d2[keep].reshape(n, kk - 1), idx[keep].reshape(n, kk - 1)
