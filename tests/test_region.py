"""dede-region (pipeline.detect.region): DeDe's difficulty residual relative to the clean rows of its region of
embedding space, and its calibration in a run."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.dede.reference import CleanReference
from pipeline.dede.thresholds import calibration_summary, fpr_threshold
from pipeline.detect.calibrate import calibrate
from pipeline.detect.difficulty import RelativeError
from pipeline.detect.region import RegionalError
from pipeline.detect.spec import plan_detectors
from pipeline.errors import BadInput

CENTRES = np.eye(8)[:4] * 5.0                      # four well-apart regions
EASE = np.array([0.0, 0.0, 0.0, -1.2])             # region 3 reconstructs e^1.2 = 3.3x better than the others


def _clean(rng, n, region=None):
    """Clean rows: embeddings around the centres; log error = log difficulty + the region's ease + noise."""
    r = rng.integers(0, 4, n) if region is None else np.full(n, region)
    x = CENTRES[r] + rng.normal(0, 0.3, (n, 8))
    difficulty = np.exp(rng.uniform(2, 6, n))
    return x, difficulty * np.exp(EASE[r] + rng.normal(0, 0.2, n)), difficulty


def test_region_medians_find_triggered_rows_in_an_easy_region_that_the_global_residual_misses():
    rng = np.random.default_rng(0)
    bank = _clean(rng, 1000)[0]
    hold_x, hold_s, hold_d = _clean(rng, 2000)
    rel = RelativeError(hold_s, hold_d)
    regional = RegionalError(bank, hold_x, rel(hold_s, hold_d), regions=4)
    assert sorted(np.bincount(regional.region(CENTRES))) == [1, 1, 1, 1]    # one region per centre
    x, s, d = _clean(rng, 4000)
    tx, ts, td = _clean(rng, 40, region=3)
    ts = ts * np.exp(0.8)                                          # 2.2x its region's error: still below the rest
    y = np.r_[np.zeros(4000), np.ones(40)]
    xs, ss, ds = np.r_[x, tx], np.r_[s, ts], np.r_[d, td]
    global_auc, region_auc = roc_auc_score(y, rel(ss, ds)), roc_auc_score(y, regional(rel(ss, ds), xs))
    assert global_auc < 0.8 and region_auc > 0.99, (global_auc, region_auc)
    clean = regional(rel(s, d), x)
    assert all(abs(np.median(clean[regional.region(x) == r])) < 0.05 for r in range(4))   # each region centred


def test_a_sparse_region_takes_the_whole_hold_out_median_and_a_tiny_bank_is_refused():
    rng = np.random.default_rng(1)
    hold_x, hold_s, hold_d = _clean(rng, 300, region=0)
    bank = np.r_[_clean(rng, 200, region=0)[0], _clean(rng, 200, region=1)[0]]   # the hold-out never visits region 1
    rel = RelativeError(hold_s, hold_d)
    regional = RegionalError(bank, hold_x, rel(hold_s, hold_d), regions=2)
    empty = regional.region(CENTRES[1:2])[0]
    assert regional.centre[empty] == pytest.approx(np.median(rel(hold_s, hold_d)))
    assert regional.region(np.empty((0, 8))).shape == (0,)
    with pytest.raises(ValueError, match="at least 5 rows"):
        RegionalError(bank[:3], hold_x, rel(hold_s, hold_d), regions=5)


def test_a_run_calibrates_dede_region_on_the_hold_out_and_holds_its_rate_on_new_clean_rows():
    rng = np.random.default_rng(2)
    hold_x, hold_s, hold_d = _clean(rng, 2000)
    clean = CleanReference(hold_s.astype(np.float32), hold_x.astype(np.float16),
                           _clean(rng, 1000)[0].astype(np.float16), hold_d.astype(np.float32))
    plan = plan_detectors("dede,dede-region,ensemble", ensemble="dede,dede-region")
    cal = calibrate(plan, clean, np.empty((0, 8), np.float16), np.empty(0, np.uint64),
                    calibration_summary(clean.holdout_scores, 1.0))
    assert cal.holdout["dede-region"].shape == (2000,)
    x, s, d = _clean(rng, 5000)
    out = cal.suite.score(x.astype(np.float16), np.arange(5000), s, d)
    threshold = fpr_threshold(cal.calibrations["dede-region"], 0.01)
    assert 0.005 <= np.mean(out["dede-region"] > threshold) <= 0.015
    old = CleanReference(clean.holdout_scores, clean.holdout_embeddings, clean.bank_embeddings)
    with pytest.raises(BadInput, match="dede-region needs the hold-out's difficulty"):
        calibrate(plan_detectors("dede,dede-region"), old, np.empty((0, 8), np.float16), np.empty(0, np.uint64),
                  calibration_summary(clean.holdout_scores, 1.0))
