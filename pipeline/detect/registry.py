"""The embedding detectors by name; higher = more suspicious.

`fit(names, reference, ids)` fits detectors on a reference once (the density ones share one
neighbourhood search); a fitted detector scores rows: `detector(x, ids)`, where a query id that is a
reference id is that reference row, so its self-match is left out. `score(name, x, reference)` fits
and scores in one call.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from pipeline.detect import baselines
from pipeline.detect.density import K, DensityScore, Neighbourhoods

Detector = Callable[[np.ndarray, np.ndarray | None], np.ndarray]

DENSITY: dict[str, tuple[str, str]] = {      # name -> (measure, direction)
    "kdist": ("kdist", "sparse"),
    "slof": ("slof", "sparse"),
    "dao": ("dao", "sparse"),
    "kdist-dense": ("kdist", "dense"),
    "slof-dense": ("slof", "dense"),
    "dao-dense": ("dao", "dense"),
    "dao-both": ("dao", "both"),
}
BASELINES: dict[str, Callable[..., Detector]] = {
    "norm": baselines.EmbeddingNorm,
    "spectral": baselines.SpectralSignature,
    "iforest": baselines.IsolationForestScore,
}
DETECTORS: tuple[str, ...] = (*DENSITY, *BASELINES)


def fit(names: Iterable[str], reference: np.ndarray, ids: np.ndarray | None = None, k: int = K) -> dict[str, Detector]:
    """The detectors `names` fitted on `reference` (rows carrying `ids`, default 0..n-1)."""
    names = list(names)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector {unknown[0]!r}; known: {', '.join(DETECTORS)}")
    hood = Neighbourhoods(reference, k, ids) if any(n in DENSITY for n in names) else None
    return {n: DensityScore(*DENSITY[n], hood) if n in DENSITY else BASELINES[n](reference, ids) for n in names}


def score(name: str, x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Score every row of `x` with detector `name`, against `reference` (None: in-corpus, each row's
    self-match excluded)."""
    ids = np.arange(len(x)) if reference is None else None
    detector = fit([name], x if reference is None else reference, ids)[name]
    return np.asarray(detector(x, ids), np.float64)
