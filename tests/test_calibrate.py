"""The product's embedding detectors on synthetic embeddings: calibration on a clean hold-out (realised
FPR near the asked one), rank fusion by max/mean with leave-one-out ranks, k-NN self-exclusion by id."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.dede.reference import CleanReference
from pipeline.dede.thresholds import calibration_summary, fpr_threshold
from pipeline.detect.calibrate import (aux_shift, calibrate, detector_threshold, pseudo_corpus, pseudo_k,
                                      pseudo_rows, shift_tolerance, trim_bank)
from pipeline.detect.ensemble import percentile, rank_fusion
from pipeline.detect.knn import knn
from pipeline.detect.registry import fit
from pipeline.detect.spec import column, plan_detectors
from pipeline.errors import BadInput

D = 16


def clean_reference(rng, n_holdout=2000, n_bank=8000, sample=None) -> CleanReference:
    sample = sample or (lambda n: rng.normal(size=(n, D)))
    return CleanReference(holdout_scores=rng.gamma(2.0, size=n_holdout).astype(np.float32),
                          holdout_embeddings=sample(n_holdout).astype(np.float16),
                          bank_embeddings=sample(n_bank).astype(np.float16))


def test_planted_dense_cluster_is_found_in_corpus_at_fpr_001_and_clean_fpr_holds():
    rng = np.random.default_rng(0)
    clean = clean_reference(rng)
    corpus = rng.normal(size=(5000, D))
    planted = corpus[0] + rng.normal(scale=0.01, size=(100, D))        # triggered images collapsed together
    x = np.concatenate([corpus, planted]).astype(np.float16)
    poisoned = np.r_[np.zeros(5000, bool), np.ones(100, bool)]
    ids = rng.choice(2**62, size=len(x), replace=False).astype(np.uint64)   # ids are hashes, not positions
    plan = plan_detectors("kdist-dense")
    cal = calibrate(plan, clean, x, ids, calibration_summary(clean.holdout_scores, 1.0))
    s = cal.suite.score(x, ids, np.zeros(len(x)))["kdist-dense"]
    t = detector_threshold("fpr:0.01", "kdist-dense", cal.calibrations["kdist-dense"])
    assert t == fpr_threshold(cal.calibrations["kdist-dense"], 0.01)
    assert 0.005 <= (s[~poisoned] > t).mean() <= 0.02
    assert (s[poisoned] > t).mean() > 0.95
    assert len(cal.holdout["kdist-dense"]) == 2000


def test_a_trimmed_bank_stops_vouching_for_the_triggered_rows_a_poisoned_auxiliary_set_put_in_it():
    rng = np.random.default_rng(4)
    trigger_point = rng.normal(size=D) * 3                             # far from the clean cloud
    collapsed = lambda n: trigger_point + rng.normal(scale=0.01, size=(n, D))   # noqa: E731
    clean = clean_reference(rng)
    poisoned_bank = np.concatenate([clean.bank_embeddings, collapsed(80).astype(np.float16)])   # 1% poison
    kept = trim_bank(poisoned_bank, 0.02)
    assert len(kept) == len(poisoned_bank) - int(0.02 * len(poisoned_bank))
    assert np.abs(kept.astype(np.float32) - trigger_point).max(1).min() > 0.5    # every collapsed row is gone
    np.testing.assert_array_equal(trim_bank(poisoned_bank, 0.0), poisoned_bank)
    x = np.concatenate([rng.normal(size=(1000, D)), collapsed(20)]).astype(np.float16)
    y = np.r_[np.zeros(1000), np.ones(20)]
    ids = np.arange(len(x), dtype=np.uint64)
    plan = plan_detectors("kdist:bank")
    aucs = {}
    for share in (0.0, 0.02):
        ref = CleanReference(clean.holdout_scores, clean.holdout_embeddings, poisoned_bank)
        cal = calibrate(plan, ref, x, ids, calibration_summary(clean.holdout_scores, 1.0), bank_trim=share)
        aucs[share] = roc_auc_score(y, cal.suite.score(x, ids, np.zeros(len(x)))["kdist:bank"])
    assert aucs[0.0] < 0.2 and aucs[0.02] > 0.99, aucs


def test_uniform_cloud_gives_no_suspects():
    rng = np.random.default_rng(3)
    uniform = lambda n: rng.uniform(size=(n, 8))        # noqa: E731
    clean = clean_reference(rng, 500, 1500, uniform)
    x = uniform(1000).astype(np.float16)
    labels = np.zeros(1000)
    labels[rng.choice(1000, 50, replace=False)] = 1
    ids = np.arange(1000, dtype=np.uint64)
    plan = plan_detectors("kdist,kdist-dense,dao,kdist:bank,ensemble", ensemble="kdist,kdist-dense")
    cal = calibrate(plan, clean, x, ids, calibration_summary(clean.holdout_scores, 1.0))
    scores = cal.suite.score(x, ids, np.zeros(1000))
    for name in plan.names[1:]:
        assert 0.35 < roc_auc_score(labels, scores[name]) < 0.65, name


def test_in_corpus_calibration_uses_a_pseudo_corpus_of_the_corpus_reference_size():
    rng = np.random.default_rng(1)
    clean = clean_reference(rng, 100, 300)
    # the hold-out, then the bank's odd rows: disjoint from the even rows the bank detectors score against
    assert len(pseudo_corpus(clean, 200)) == 200 and len(pseudo_corpus(clean, 10_000)) == 250
    assert pseudo_rows(clean, 200) == 200 and pseudo_rows(clean, 10_000) == 250
    np.testing.assert_array_equal(pseudo_corpus(clean, 50), clean.holdout_embeddings[:50])
    np.testing.assert_array_equal(pseudo_corpus(clean, 250)[100:], clean.bank_embeddings[1::2])
    plan = plan_detectors("kdist,norm:bank")
    x = rng.normal(size=(250, D)).astype(np.float16)
    cal = calibrate(plan, clean, x, np.arange(250, dtype=np.uint64), calibration_summary(clean.holdout_scores, 1.0))
    # the hold-out scored in its pseudo-corpus, self-matches out: the same as in-corpus scoring of that set
    pseudo = pseudo_corpus(clean, 250)
    expected = fit(["kdist"], pseudo)["kdist"](clean.holdout_embeddings, np.arange(100))
    np.testing.assert_allclose(cal.holdout["kdist"], expected)
    bank = fit(["norm"], clean.bank_embeddings[::2])["norm"]
    np.testing.assert_allclose(cal.holdout["norm:bank"], bank(clean.holdout_embeddings, None))
    np.testing.assert_allclose(cal.suite.score(x, np.arange(250), np.zeros(250))["norm:bank"], bank(x, None))
    assert math.isnan(cal.calibrations["kdist"].paper_threshold)
    assert detector_threshold("paper", "kdist", cal.calibrations["kdist"]) is None
    small = calibrate(plan, clean, x[:10], np.arange(10, dtype=np.uint64), cal.calibrations["dede"])
    # a corpus of 10 rows: each row against its 9 others, the hold-out likewise in a pseudo-corpus of 10
    expected = fit(["kdist"], pseudo_corpus(clean, 10), k=9)["kdist"](clean.holdout_embeddings, np.arange(100))
    np.testing.assert_allclose(small.holdout["kdist"], expected)
    with pytest.raises(BadInput, match="the corpus reference sample holds 1 rows; kdist need at least 2"):
        calibrate(plan, clean, x[:1], np.arange(1, dtype=np.uint64), cal.calibrations["dede"])


def test_percentile_leave_one_out_and_fusion_by_max_and_mean():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(percentile(np.array([0.0, 2.0, 9.0]), ref), [0.0, 0.375, 1.0])
    # leave-one-out: row i is ranked against the other three only
    np.testing.assert_allclose(percentile(ref, ref, leave_one_out=True), [0.0, 1 / 3, 2 / 3, 1.0])
    ties = np.array([5.0, 5.0, 1.0])
    np.testing.assert_allclose(percentile(ties, ties, leave_one_out=True), [0.75, 0.75, 0.0])
    a, b = np.array([1.0, 4.0]), np.array([4.0, 2.0])
    refs = {"a": ref, "b": ref}
    np.testing.assert_allclose(rank_fusion({"a": a, "b": b}, refs, fusion="max"), [0.875, 0.875])
    np.testing.assert_allclose(rank_fusion({"a": a, "b": b}, refs, fusion="mean"), [0.5, 0.625])
    np.testing.assert_allclose(rank_fusion({"a": ref, "b": ref[::-1]}, fusion="max", leave_one_out=True),
                               [1.0, 2 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="fusion must be one of max, mean, fisher"):
        rank_fusion({"a": a}, refs, fusion="median")


def test_fisher_fusion_lets_one_member_far_in_its_tail_outrank_two_members_above_their_median():
    ref = np.arange(1.0, 101.0)                                  # clean scores 1..100 for both members
    refs = {"a": ref, "b": ref}
    one_far = {"a": np.array([99.5, 80.5]), "b": np.array([50.5, 80.5])}     # row 0: a above 99% of clean
    np.testing.assert_allclose(rank_fusion(one_far, refs, "fisher"),
                               [-np.log(0.01) - np.log(0.5), -2 * np.log(0.2)])
    assert np.diff(rank_fusion(one_far, refs, "fisher"))[0] < 0 < np.diff(rank_fusion(one_far, refs, "mean"))[0]
    beyond = rank_fusion({"a": np.array([1e9])}, refs, "fisher")            # past every clean score: p = 1, finite
    assert np.isfinite(beyond).all() and beyond[0] == pytest.approx(-np.log(1e-6))


def test_ensemble_calibration_is_the_leave_one_out_fusion_of_the_holdout():
    rng = np.random.default_rng(2)
    clean = clean_reference(rng, 300, 600)
    x = rng.normal(size=(400, D)).astype(np.float16)
    plan = plan_detectors("ensemble", "ensemble", "dede,kdist-dense", "mean")
    assert plan.names == ("dede", "kdist-dense", "ensemble") and column("ensemble") == "det_ensemble"
    cal = calibrate(plan, clean, x, np.arange(400, dtype=np.uint64), calibration_summary(clean.holdout_scores, 1.0))
    h = cal.holdout
    want = (percentile(h["dede"], h["dede"], True) + percentile(h["kdist-dense"], h["kdist-dense"], True)) / 2
    np.testing.assert_allclose(h["ensemble"], want)
    scores = cal.suite.score(x, np.arange(400, dtype=np.uint64), rng.gamma(2.0, size=400))
    want = (percentile(scores["dede"], h["dede"]) + percentile(scores["kdist-dense"], h["kdist-dense"])) / 2
    np.testing.assert_allclose(scores["ensemble"], want)


def test_knn_excludes_each_query_by_id_even_among_exact_duplicates():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(50, D))
    ref[10:13] = ref[10]                                   # three identical images, three distinct rows
    ref_ids = np.arange(100, 150)
    queries = ref[[10, 11, 20]]
    dist, idx = knn(queries, ref, 3, query_ids=np.array([111, 110, 999]), reference_ids=ref_ids)
    assert 11 not in idx[0] and set(idx[0][:2]) == {10, 12}            # 111 is row 11: itself left out
    assert 10 not in idx[1] and set(idx[1][:2]) == {11, 12}
    assert dist[0][0] == dist[0][1] == 0.0                             # its duplicates stay, at distance 0
    full, _ = knn(queries[2:], ref, 4)
    np.testing.assert_allclose(dist[2], full[0][:3], rtol=1e-5)        # an id not in the reference: k nearest
    in_corpus, _ = knn(ref, None, 3)
    by_id, _ = knn(ref, ref, 3, query_ids=ref_ids, reference_ids=ref_ids)
    np.testing.assert_allclose(in_corpus, by_id)
    # fitted density detectors: a query that is a reference row gets that row's own neighbourhood
    det = fit(["kdist"], ref, ref_ids)["kdist"]
    np.testing.assert_allclose(det(ref[:5], ref_ids[:5]), fit(["kdist"], ref)["kdist"](ref, np.arange(50))[:5])


def test_a_corpus_reference_larger_than_the_pseudo_corpus_keeps_the_dense_members_clean_fpr():
    rng = np.random.default_rng(5)
    clean = clean_reference(rng, 1000, 2000)                # a pseudo-corpus of 2,000 rows: half the bank joins it
    x = rng.normal(size=(10_000, D)).astype(np.float16)                  # a clean corpus five times larger
    ids = np.arange(len(x), dtype=np.uint64)
    assert pseudo_k(16, 2000, 10_000) == 3 and pseudo_k(16, 10_000, 10_000) == 16 and pseudo_k(16, 5, 10**6) == 1
    plan = plan_detectors("kdist-dense")
    cal = calibrate(plan, clean, x, ids, calibration_summary(clean.holdout_scores, 1.0))
    expected = fit(["kdist-dense"], pseudo_corpus(clean, len(x)), k=3)["kdist-dense"](clean.holdout_embeddings,
                                                                                     np.arange(1000))
    np.testing.assert_allclose(cal.holdout["kdist-dense"], expected)
    s = cal.suite.score(x, ids, np.zeros(len(x)))["kdist-dense"]
    assert 0.001 <= (s > detector_threshold("fpr:0.01", "kdist-dense", cal.calibrations["kdist-dense"])).mean() <= 0.015


def test_aux_shift_is_a_half_for_a_corpus_drawn_like_the_auxiliary_set_and_more_for_one_drawn_elsewhere():
    rng = np.random.default_rng(6)
    clean = clean_reference(rng, 2000, 8000)
    alike, elsewhere = rng.normal(size=(10_000, D)), rng.normal(loc=0.3, size=(10_000, D))
    tol = shift_tolerance(10_000, 2000)
    assert tol == 0.05 and shift_tolerance(100, 2000) == pytest.approx(3 * math.sqrt(0.25 / 100 + 0.25 / 2000))
    assert abs(aux_shift(clean, alike) - 0.5) < tol < aux_shift(clean, elsewhere) - 0.5
    assert aux_shift(clean_reference(rng, 10, 16), alike) is None                 # a bank of k rows: no k-distance
