"""Calibration of every detector of a run on the decoder's clean hold-out, scored the way corpus rows are.

- `dede`: the hold-out's DeDe scores (the decoder's own calibration).
- `dede-rel`: the hold-out's DeDe scores relative to their difficulty, by a fit on the same hold-out.
- `dede-region`: the same, less the median of its region's hold-out rows (regions: k-means of the whole bank).
- `occlusion`, `transplant`: the hold-out's scores, taken when the decoder was trained.
- `X:bank`: the hold-out embeddings scored against the scoring half of the bank (`split_bank`), as corpus rows
  are; with `bank_trim` that half first loses that share of its rows whose own k-distance is furthest from its
  median (`trim_bank`).
- in-corpus `X`: the hold-out scored inside a pseudo-corpus, the hold-out plus the bank's other half, as many rows
  in all as the corpus reference sample has (fewer when fewer exist); each hold-out row's self-match is excluded
  as a corpus row's is. The halves are disjoint because a corpus row's in-corpus neighbours are never its bank
  neighbours: with one bank for both, a hold-out row's in-corpus and bank members read the same neighbours, the
  ensemble's hold-out tail comes out thinner than a corpus's, and clean corpus rows cross its threshold above the
  asked rate (results/calibration_shift.md).
- `ensemble`: each member's hold-out scores ranked leave-one-out (a row is not ranked against itself),
  fused like corpus rows.
Each distribution becomes a `Calibration` (the quantiles the `fpr:X` policy reads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.dede.reference import CleanReference
from pipeline.dede.thresholds import (Calibration, ThresholdPolicy, calibration_summary, parse_threshold,
                                      resolve_threshold)
from pipeline.detect.density import K, k_distance
from pipeline.detect.difficulty import RelativeError
from pipeline.detect.ensemble import Ensemble, rank_fusion
from pipeline.detect.region import RegionalError
from pipeline.detect.registry import DENSITY, Detector, fit
from pipeline.detect.spec import DEDE, DEDE_REGION, ENSEMBLE, TRANSPLANT, DetectorPlan
from pipeline.detect.suite import DetectorSuite
from pipeline.errors import BadInput


@dataclass(frozen=True)
class Calibrated:
    """A run's detectors ready to score the corpus, and their clean hold-out distributions."""

    suite: DetectorSuite                      # fitted on the corpus reference and the bank
    holdout: dict[str, np.ndarray]            # by detector name: the hold-out's scores
    calibrations: dict[str, Calibration]      # by detector name (dede: the decoder's)


def split_bank(bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scoring half, pseudo-corpus half) of the bank: its even and its odd rows, so each half spans the bank's key
    hashes (it is stored lowest hash first)."""
    return bank[::2], bank[1::2]


def pseudo_corpus(clean: CleanReference, size: int) -> np.ndarray:
    """The clean stand-in for a corpus reference of `size` rows: the hold-out, then the bank's pseudo-corpus half
    (`split_bank`), cut at `size` rows. Row i is id i, so hold-out row i is pseudo-corpus row i."""
    return np.concatenate([clean.holdout_embeddings, split_bank(clean.bank_embeddings)[1]])[:size]


def pseudo_rows(clean: CleanReference, size: int) -> int:
    """How many rows `pseudo_corpus(clean, size)` holds, without building it."""
    return min(size, len(clean.holdout_embeddings) + len(clean.bank_embeddings) // 2)


def trim_bank(bank: np.ndarray, share: float, k: int = K) -> np.ndarray:
    """The bank less `share` of its rows, those whose own k-distance (self-match left out) is furthest from
    the bank's median either way: the triggered rows of a slightly poisoned auxiliary set are its tightest
    cluster or its most isolated points, and a bank that holds them vouches for triggered corpus rows."""
    n_drop = int(share * len(bank))
    if not n_drop or len(bank) - n_drop <= k:
        return bank
    outlying = k_distance(bank, None, k, direction="both")
    return bank[np.sort(np.argsort(-outlying, kind="stable")[n_drop:])]


def check_difficulty(plan: DetectorPlan, clean: CleanReference) -> None:
    """BadInput when the plan has dede-rel or dede-region and the reference predates the hold-out's difficulty."""
    if plan.needs_difficulty and clean.holdout_difficulty is None:
        raise BadInput(f"{plan.needs_difficulty[0]} needs the hold-out's difficulty, which decoders trained before it "
                       f"lack; retrain the decoder with jobs/train_decoder.py, or leave it out of --detectors and "
                       f"--ensemble")


def check_images(plan: DetectorPlan, clean: CleanReference) -> None:
    """BadInput when the plan has an image detector whose hold-out scores (or, for transplant, recipient images) the
    reference predates."""
    for name in plan.image_detectors:
        if clean.holdout(name) is None or (name == TRANSPLANT and clean.recipients is None):
            raise BadInput(f"{name} needs the hold-out's {name} scores, which decoders trained before it lack; "
                           f"retrain the decoder with jobs/train_decoder.py, or leave it out of --detectors and "
                           f"--ensemble")


def relative_error(plan: DetectorPlan, clean: CleanReference) -> RelativeError | None:
    """dede-rel's fit on the hold-out when the plan has it or dede-region (check_difficulty first)."""
    check_difficulty(plan, clean)
    return RelativeError(clean.holdout_scores, clean.holdout_difficulty) if plan.needs_difficulty else None


def regional_error(plan: DetectorPlan, clean: CleanReference, relative: RelativeError | None) -> RegionalError | None:
    """dede-region's fit (regions of the whole bank, medians of the hold-out) when the plan has it."""
    if DEDE_REGION not in plan.names or relative is None:
        return None
    return RegionalError(clean.bank_embeddings, clean.holdout_embeddings,
                         relative(clean.holdout_scores, clean.holdout_difficulty))


def corpus_k(rows: int, k: int = K) -> int:
    """The in-corpus density detectors' neighbours for a corpus reference of `rows` rows: k, or every other row of
    a smaller corpus (its pseudo-corpus has as many rows, so the calibration stays like for like)."""
    return max(1, min(k, rows - 1))


def pseudo_k(k: int, pseudo_rows: int, corpus_rows: int) -> int:
    """The pseudo-corpus's neighbours: the corpus's `k` scaled by the two sizes, so the k-th neighbour holds the
    same share of either. At the corpus's k a smaller pseudo-corpus has wider neighbourhoods, so clean corpus rows
    read as denser than every clean hold-out row and the dense members flag them above the asked rate."""
    return max(1, min(k, round(k * (pseudo_rows - 1) / max(corpus_rows - 1, 1))))


def aux_shift(clean: CleanReference, reference: np.ndarray, k: int = K) -> float | None:
    """Share of the corpus reference rows farther from the bank (k-distance) than the clean hold-out's median row:
    about 0.5 where the auxiliary set is drawn like the corpus, more where the corpus lies elsewhere, and then the
    thresholds calibrated on the auxiliary set need not hold their rate. None when the bank or the sample is too small."""
    if len(clean.bank_embeddings) <= k or not len(reference) or not len(clean.holdout_embeddings):
        return None
    kdist = fit(["kdist"], clean.bank_embeddings, None, k)["kdist"]
    return float((kdist(reference, None) > np.median(kdist(clean.holdout_embeddings, None))).mean())


def shift_tolerance(corpus_rows: int, holdout_rows: int) -> float:
    """How far above 0.5 `aux_shift` may lie by chance: three standard errors of the two shares, and at least 0.05."""
    return max(0.05, 3 * math.sqrt(0.25 / corpus_rows + 0.25 / holdout_rows))


def _fit(names: list[str], reference: np.ndarray, ids: np.ndarray | None, what: str, k: int) -> dict[str, Detector]:
    if not names:
        return {}
    need = k + 1 if any(n in DENSITY for n in names) else 2
    if len(reference) < need:
        raise BadInput(f"{what} holds {len(reference)} rows; {', '.join(names)} need at least {need}")
    return fit(names, reference, ids, k)


def calibrate(plan: DetectorPlan, clean: CleanReference, reference: np.ndarray, reference_ids: np.ndarray,
              dede: Calibration, k: int = K, bank_trim: float = 0.0) -> Calibrated:
    """Fit the plan's detectors on the corpus `reference` (rows with ids `reference_ids`; in-corpus density with
    `corpus_k` neighbours, its pseudo-corpus with `pseudo_k`) and the bank's scoring half (less `bank_trim` of it),
    and calibrate each on the hold-out; `dede` is the decoder's calibration. BadInput when a reference is too small."""
    n = len(clean.holdout_scores)
    if plan.members and n < 2:
        raise BadInput(f"the decoder's hold-out holds {n} row; the ensemble's leave-one-out ranks need 2")
    scoring = split_bank(clean.bank_embeddings)[0]
    bank_rows = trim_bank(scoring, bank_trim, k) if plan.bank else scoring
    bank = _fit(plan.bank, bank_rows, None, "the scoring half of the decoder's bank (reference.safetensors)", k)
    relative = relative_error(plan, clean)
    check_images(plan, clean)
    regional = regional_error(plan, clean, relative)
    pseudo = pseudo_corpus(clean, len(reference))
    k_in = corpus_k(len(reference), k)
    corpus = _fit(plan.in_corpus, reference, reference_ids, "the corpus reference sample", k_in)
    k_pseudo = pseudo_k(k_in, len(pseudo), len(reference))
    clean_suite = DetectorSuite(plan, _fit(plan.in_corpus, pseudo, None, "the hold-out pseudo-corpus", k_pseudo), bank,
                                None, relative, regional)
    holdout = clean_suite.score(clean.holdout_embeddings, np.arange(n), clean.holdout_scores, clean.holdout_difficulty,
                                {n: clean.holdout(n) for n in plan.image_detectors})
    ensemble = None
    if plan.members:
        members = {m: holdout[m] for m in plan.members}
        ensemble = Ensemble(members, plan.fusion)
        holdout[ENSEMBLE] = rank_fusion(members, fusion=plan.fusion, leave_one_out=True)
    calibrations = {name: dede if name == DEDE else calibration_summary(holdout[name], paper_threshold=math.nan)
                    for name in plan.names}
    return Calibrated(DetectorSuite(plan, corpus, bank, ensemble, relative, regional), holdout, calibrations)


def detector_threshold(policy: ThresholdPolicy | str | float, name: str, calibration: Calibration | None,
                       scores: np.ndarray | None = None) -> float | None:
    """The threshold of detector `name` at `policy`: fpr:X its calibration's quantile, a number as it
    is, gmm a fit on its corpus scores (dede's on log scores, as the decoder's policy does); None for
    `paper`, which only dede has."""
    p = parse_threshold(policy)
    if name == DEDE:
        return resolve_threshold(p, calibration, scores)
    if p.kind == "paper":
        return None
    return resolve_threshold(p, calibration, scores, log_scores=False)
