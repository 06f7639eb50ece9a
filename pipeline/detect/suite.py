"""A run's detectors, fitted on their references, scoring rows: `suite.score(x, ids, dede, difficulty, images)`.

In-corpus detectors are fitted on a corpus reference sample whose rows carry ids (a corpus row's id
is the hash of its shard stem and key, so a row inside the sample is matched to itself and its
self-match left out); `:bank` ones on the decoder's bank; the ensemble fuses its members' clean
percentiles. The suite pickles whole (Ray's object store) and rebuilds its faiss indexes on arrival.
"""
from __future__ import annotations

import numpy as np

from pipeline.detect.difficulty import RelativeError
from pipeline.detect.ensemble import Ensemble
from pipeline.detect.region import RegionalError
from pipeline.detect.registry import Detector
from pipeline.detect.spec import (DEDE, DEDE_REGION, DEDE_REL, DIFFICULTY_DETECTORS, ENSEMBLE, IMAGE_DETECTORS,
                                  DetectorPlan, base)


class DetectorSuite:
    """The plan's detectors: `corpus` (by registry name, in-corpus), `bank` (by registry name, against
    the bank), `relative` and `regional` (dede-rel's and dede-region's clean fits, when the plan has them) and
    the ensemble (None: not computed, or being calibrated)."""

    def __init__(self, plan: DetectorPlan, corpus: dict[str, Detector], bank: dict[str, Detector],
                 ensemble: Ensemble | None, relative: RelativeError | None = None,
                 regional: RegionalError | None = None):
        self.plan, self.corpus, self.bank, self.ensemble = plan, corpus, bank, ensemble
        self.relative, self.regional = relative, regional

    def score(self, x: np.ndarray, ids: np.ndarray, dede: np.ndarray,
              difficulty: np.ndarray | None = None, images: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Scores by detector name of rows `x` (ids `ids`, DeDe scores `dede`, their `difficulty`, which
        dede-rel and dede-region need, and the image detectors' scores by name, taken while scoring); the ensemble
        when the suite has one."""
        out = {DEDE: np.asarray(dede, np.float64)}
        for name in self.plan.image_detectors:
            if images is None or images.get(name) is None:
                raise ValueError(f"{name} needs the rows' {name} scores")
            out[name] = np.asarray(images[name], np.float64)
        if self.plan.needs_difficulty:
            if self.relative is None or difficulty is None:
                raise ValueError(f"{self.plan.needs_difficulty[0]} needs its clean fit and the rows' difficulty")
            residual = self.relative(dede, difficulty)               # dede-rel, which dede-region also starts from
            if DEDE_REL in self.plan.names:
                out[DEDE_REL] = residual
            if DEDE_REGION in self.plan.names:
                if self.regional is None:
                    raise ValueError("dede-region needs its clean fit")
                out[DEDE_REGION] = self.regional(residual, x)
        for name in self.plan.names:
            if name in (DEDE, *DIFFICULTY_DETECTORS, *IMAGE_DETECTORS, ENSEMBLE):
                continue
            if len(x) == 0:
                out[name] = np.empty(0)
            elif name in self.corpus:
                out[name] = np.asarray(self.corpus[name](x, ids), np.float64)
            else:
                out[name] = np.asarray(self.bank[base(name)](x, None), np.float64)
        if self.ensemble is not None:
            out[ENSEMBLE] = self.ensemble(out)
        return out
