"""Exact k-nearest-neighbour distances with faiss (a flat L2 index; fits CPU memory up to millions of rows).

A reference may contain some of the query rows (in-corpus scoring against a sample of the corpus):
give both sides ids and each query's own row is left out by id, never by distance 0 (duplicate
images are distinct rows at distance 0).
"""
from __future__ import annotations

import numpy as np


def _as_f32(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    return x


class KnnIndex:
    """An exact faiss IndexFlatL2 over reference rows and their ids (default 0..n-1). Pickles as its rows
    (kept in their own float dtype, e.g. float16) and ids; the index is rebuilt when it is unpickled (in
    each Ray actor that receives it)."""

    def __init__(self, reference: np.ndarray, ids: np.ndarray | None = None):
        self.rows = np.asarray(reference)
        self.ids = np.arange(len(self.rows)) if ids is None else np.asarray(ids)
        if self.ids.shape != (len(self.rows),):
            raise ValueError(f"{len(self.rows)} reference rows but ids of shape {self.ids.shape}")
        self._build()

    def _build(self) -> None:
        import faiss

        rows = _as_f32(self.rows)
        self.index = faiss.IndexFlatL2(rows.shape[1])
        self.index.add(rows)

    def __getstate__(self) -> dict:
        return {"rows": self.rows, "ids": self.ids}

    def __setstate__(self, state: dict) -> None:
        self.rows, self.ids = state["rows"], state["ids"]
        self._build()

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, query: np.ndarray, k: int, query_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, reference positions), each (n, k), ascending L2 distances from every query row to its
        k nearest reference rows. With `query_ids`, k + 1 are searched and each row's neighbour with its
        own id is dropped (or, when duplicates hid it, the farthest one)."""
        q = _as_f32(query)
        if q.shape[1] != self.rows.shape[1]:
            raise ValueError(f"query dim {q.shape[1]} != reference dim {self.rows.shape[1]}")
        k_eff = k if query_ids is None else k + 1
        if k < 1 or k_eff > len(self.rows):
            raise ValueError(f"k={k} needs at least {k_eff} reference rows, got {len(self.rows)}")
        d2, idx = self.index.search(q, k_eff)
        if query_ids is not None:
            d2, idx = _drop_own(d2, idx, self.ids[idx] == np.asarray(query_ids)[:, None])
        return np.sqrt(np.maximum(d2, 0.0)).astype(np.float64), idx


def knn(query: np.ndarray, reference: np.ndarray | None, k: int, query_ids: np.ndarray | None = None,
        reference_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices), each (n, k), ascending L2 distances from every query row to its k nearest
    reference rows. With `reference=None` the query set is its own reference and each row's self-match
    is excluded; with `query_ids` (and `reference_ids`, default 0..n-1) a reference row carrying the
    query's id is excluded."""
    if reference is None:
        q = _as_f32(query)
        return KnnIndex(q).search(q, k, np.arange(len(q)))
    return KnnIndex(reference, reference_ids).search(query, k, query_ids)


def _drop_own(d2: np.ndarray, idx: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove per row the first neighbour marked `own` (or, when none is, the last column)."""
    n, kk = idx.shape
    drop = np.where(own.any(1), own.argmax(1), kk - 1)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return d2[keep].reshape(n, kk - 1), idx[keep].reshape(n, kk - 1)
