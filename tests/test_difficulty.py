"""dede-rel: DeDe's error relative to the image's own difficulty (pipeline.detect.difficulty), the
difficulty the scorer computes (pipeline.dede.model.masked_difficulty), its place in the clean reference
and in a run's calibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pipeline.dede.model import masked_difficulty, masked_sse
from pipeline.dede.reference import CleanReference
from pipeline.dede.thresholds import calibration_summary, fpr_threshold
from pipeline.detect.calibrate import calibrate
from pipeline.detect.difficulty import RelativeError
from pipeline.detect.spec import plan_detectors
from pipeline.errors import BadInput


def test_difficulty_is_the_error_of_the_hidden_pixels_mean_colour():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(4, 3, 8, 8, generator=g)
    mask = torch.zeros(4, 1, 8, 8)
    mask[:, :, :4] = 1                                              # top half hidden
    mean = img[:, :, :4].mean((2, 3), keepdim=True)
    expected = masked_sse(mean.expand_as(img), img, mask)
    torch.testing.assert_close(masked_difficulty(img, mask), expected)
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert masked_difficulty(flat, torch.ones(1, 1, 8, 8)).item() == pytest.approx(0.0, abs=1e-6)
    assert (masked_difficulty(img, torch.zeros(4, 1, 8, 8)) == 0).all()     # nothing hidden, nothing to miss


def _clean_pairs(rng, n):
    difficulty = np.exp(rng.uniform(2, 7, n))                       # busy and flat images, 150x apart
    return difficulty * np.exp(rng.normal(0, 0.2, n)), difficulty     # clean error ~ difficulty


def test_relative_error_removes_difficulty_and_finds_what_the_raw_score_misses():
    rng = np.random.default_rng(0)
    rel = RelativeError(*_clean_pairs(rng, 2000))
    assert rel.slope == pytest.approx(1.0, abs=0.05)
    scores, difficulty = _clean_pairs(rng, 2000)
    trig_d = np.exp(rng.uniform(2, 7, 50))
    trig_s = 2.5 * trig_d * np.exp(rng.normal(0, 0.2, 50))             # 2.5x the error an image of its kind has
    y = np.r_[np.zeros(2000), np.ones(50)]
    raw = roc_auc_score(y, np.r_[scores, trig_s])
    relative = roc_auc_score(y, rel(np.r_[scores, trig_s], np.r_[difficulty, trig_d]))
    assert raw < 0.75 and relative > 0.99, (raw, relative)
    clean_rel = rel(scores, difficulty)
    assert abs(np.corrcoef(clean_rel, np.log(difficulty))[0, 1]) < 0.1


def test_relative_error_does_not_extrapolate_outside_the_clean_range():
    rng = np.random.default_rng(1)
    rel = RelativeError(*_clean_pairs(rng, 500))
    flat = rel(np.array([100.0, 100.0]), np.array([0.0, np.exp(rel.low)]))
    assert np.isfinite(flat).all() and flat[0] == pytest.approx(flat[1])
    with pytest.raises(ValueError, match="at least 2"):
        RelativeError(np.ones(1), np.ones(1))
    assert RelativeError(np.array([1.0, 3.0]), np.array([5.0, 5.0])).slope == 0.0   # one difficulty: a constant


def test_a_run_calibrates_dede_rel_on_the_hold_out_and_refuses_a_reference_without_difficulty():
    rng = np.random.default_rng(2)
    scores, difficulty = _clean_pairs(rng, 2000)
    emb = rng.normal(size=(2000, 8)).astype(np.float16)
    clean = CleanReference(scores.astype(np.float32), emb, rng.normal(size=(500, 8)).astype(np.float16),
                           difficulty.astype(np.float32))
    plan = plan_detectors("dede,dede-rel,ensemble", ensemble="dede,dede-rel")
    dede = calibration_summary(clean.holdout_scores, 1.0)
    cal = calibrate(plan, clean, np.empty((0, 8), np.float16), np.empty(0, np.uint64), dede)
    held = cal.holdout["dede-rel"]
    assert held.shape == (2000,) and abs(np.median(held)) < 0.05
    new_s, new_d = _clean_pairs(rng, 5000)
    out = cal.suite.score(rng.normal(size=(5000, 8)).astype(np.float16), np.arange(5000), new_s, new_d)
    threshold = fpr_threshold(cal.calibrations["dede-rel"], 0.01)
    assert 0.005 <= np.mean(out["dede-rel"] > threshold) <= 0.015          # fpr:0.01 holds on new clean rows
    old = CleanReference(clean.holdout_scores, clean.holdout_embeddings, clean.bank_embeddings)
    with pytest.raises(BadInput, match="dede-rel needs the hold-out's difficulty.*retrain the decoder"):
        calibrate(plan, old, np.empty((0, 8), np.float16), np.empty(0, np.uint64), dede)
