"""`dede-region`: DeDe's error relative to the image's difficulty and to the clean images of its region of
embedding space (issue 13 item 6, calibration per region).

The decoder inverts some parts of the encoder's space better than others, so one global threshold is loose
where clean images reconstruct well, and a backdoor sends its triggered images to one place: its target.
The bank's embeddings (as unit vectors) are cut into REGIONS k-means regions; a row's `dede-region` is its
`dede-rel` residual less the median residual of the clean hold-out rows in its region. One threshold on that
is a threshold per region that needs no per-region quantile (a 1% quantile of a few hundred rows is noise).
"""
from __future__ import annotations

import numpy as np

REGIONS = 5
"""k-means regions of the bank (results/regions.md: chosen on the lab's validation pools)."""
MIN_ROWS = 50
"""A region holding fewer clean hold-out rows than this takes the whole hold-out's median."""
SEED = 0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class RegionalError:
    """Fitted on the bank (the regions) and the clean hold-out's `dede-rel` residuals (each region's median);
    `regional(residual, x)` -> each row's residual less its region's clean median."""

    def __init__(self, bank: np.ndarray, holdout: np.ndarray, holdout_residual: np.ndarray, regions: int = REGIONS,
                 seed: int = SEED):
        from sklearn.cluster import KMeans

        if len(bank) < regions:
            raise ValueError(f"dede-region needs a bank of at least {regions} rows, got {len(bank)}")
        self.centroids = KMeans(regions, n_init=4, random_state=seed).fit(_unit(bank)).cluster_centers_  # (R, d)
        residual = np.asarray(holdout_residual, np.float64)
        region = self.region(holdout)
        overall = float(np.median(residual))
        self.centre = np.array([float(np.median(residual[region == r])) if (region == r).sum() >= MIN_ROWS
                                else overall for r in range(regions)])

    def region(self, x: np.ndarray) -> np.ndarray:
        """Each row's region: its nearest centroid (as a unit vector)."""
        c = self.centroids
        return np.argmin((c * c).sum(1) - 2 * _unit(x) @ c.T, axis=1) if len(x) else np.empty(0, np.int64)

    def __call__(self, residual: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.asarray(residual, np.float64) - self.centre[self.region(x)]
