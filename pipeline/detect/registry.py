"""The embedding detectors by name: `score(name, x, reference)`; higher = more suspicious."""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from pipeline.detect import baselines, density

Detector = Callable[[np.ndarray, np.ndarray | None], np.ndarray]

DETECTORS: dict[str, Detector] = {
    "kdist": partial(density.k_distance, direction="sparse"),
    "slof": partial(density.slof, direction="sparse"),
    "dao": partial(density.dao, direction="sparse"),
    "kdist-dense": partial(density.k_distance, direction="dense"),
    "slof-dense": partial(density.slof, direction="dense"),
    "dao-dense": partial(density.dao, direction="dense"),
    "dao-both": partial(density.dao, direction="both"),
    "norm": baselines.embedding_norm,
    "spectral": baselines.spectral_signature,
    "iforest": baselines.isolation_forest,
}


def score(name: str, x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Score every row of `x` with detector `name`, against `reference` (None: in-corpus)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return np.asarray(DETECTORS[name](x, reference), np.float64)
