"""The suspected target: the largest dense cluster of flagged samples in embedding space, and the
caption words over-represented among flagged samples."""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.detect.knn import knn

K = 10                     # neighbours of the k-NN graph
EPS_FRACTION = 0.5         # eps: this fraction of the median k-th neighbour distance among clean samples
MIN_SIZE = 10              # a suspected target has at least this many members ...
MIN_SHARE = 0.1            # ... and this share of the flagged samples examined
PRIOR_TOKENS = 500.0       # log-odds prior: this many pseudo-tokens, spread as the combined word frequencies
MIN_WORD_COUNT = 3
Z_MIN = 3.0
_WORD = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class Cluster:
    """The largest dense cluster among the flagged samples examined."""

    size: int
    share: float
    examined: int
    eps: float
    suspected: bool
    members: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def largest_cluster(flagged: np.ndarray, keys: list[str], reference: np.ndarray | None = None) -> Cluster | None:
    """Connected components of the flagged samples' k-NN graph on L2-normalised embeddings, keeping edges
    shorter than eps from core points (those whose k-th neighbour is within eps; DBSCAN's rule on the
    k-NN graph). eps is data-driven: half the median k-th neighbour distance among as many clean
    `reference` samples (the flagged ones themselves without a reference), so a cluster is far denser
    than clean data. None with too few flagged samples."""
    x = _unit(flagged)
    n = len(x)
    if n < 3:
        return None
    k = min(K, n - 1)
    ref = _unit(reference[:n]) if reference is not None and len(reference) > k else x
    eps = EPS_FRACTION * float(np.median(knn(ref, None, min(k, len(ref) - 1))[0][:, -1]))
    dist, idx = knn(x, None, k)
    core = dist[:, -1] <= eps
    rows, cols = np.nonzero((dist <= eps) & core[:, None])
    graph = coo_matrix((np.ones(len(rows)), (rows, idx[rows, cols])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    in_cluster = np.zeros(n, bool)
    in_cluster[rows] = True
    in_cluster[idx[rows, cols]] = True
    if not in_cluster.any():
        return Cluster(0, 0.0, n, eps, False, [])
    sizes = np.bincount(labels[in_cluster])
    best = int(sizes.argmax())
    members = np.flatnonzero(labels == best)
    size = len(members)
    share = size / n
    return Cluster(size, share, n, eps, size >= MIN_SIZE and share >= MIN_SHARE,
                   sorted(keys[i] for i in members))


def words(captions: Iterable[str | None]) -> Counter:
    """Token counts of the captions (lower-cased letter runs of two or more)."""
    c: Counter = Counter()
    for text in captions:
        if text:
            c.update(_WORD.findall(text.lower()))
    return c


def caption_words(flagged: Iterable[str | None], kept: Iterable[str | None], top: int = 12) -> list[dict]:
    """Words over-represented among flagged captions: the log-odds ratio with an informative Dirichlet
    prior (Monroe, Colaresi & Quinn 2008), as a z-score; words with z >= Z_MIN, highest first."""
    f, k = words(flagged), words(kept)
    nf, nk = sum(f.values()), sum(k.values())
    if not nf or not nk:
        return []
    total = nf + nk
    out = []
    for w, yf in f.items():
        if yf < MIN_WORD_COUNT:
            continue
        yk = k.get(w, 0)
        a = PRIOR_TOKENS * (yf + yk) / total
        rest_f, rest_k = nf + PRIOR_TOKENS - yf - a, nk + PRIOR_TOKENS - yk - a
        if rest_f <= 0 or rest_k <= 0:          # the word is every token: nothing to compare it with
            continue
        delta = math.log((yf + a) / rest_f) - math.log((yk + a) / rest_k)
        z = delta / math.sqrt(1.0 / (yf + a) + 1.0 / (yk + a))
        if z >= Z_MIN:
            out.append({"word": w, "flagged": yf, "kept": yk, "z": round(z, 3)})
    return sorted(out, key=lambda d: -d["z"])[:top]
