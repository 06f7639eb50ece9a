"""Arithmetic of the embedding detectors on small synthetic embeddings."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.detect import density
from pipeline.detect.ensemble import percentile, rank_fusion
from pipeline.detect.knn import knn
from pipeline.detect.registry import DETECTORS, score


def cloud(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_knn_excludes_self_and_matches_brute_force():
    x = cloud(200)
    dist, idx = knn(x, None, 5)
    full = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(full, np.inf)
    assert (idx != np.arange(200)[:, None]).all()
    np.testing.assert_allclose(dist, np.sort(full, 1)[:, :5], rtol=1e-4)


def test_knn_refuses_too_small_reference():
    with pytest.raises(ValueError, match="needs at least"):
        knn(cloud(4), None, 4)


def planted_cluster(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = cloud(1000)
    planted = np.random.default_rng(1).normal(scale=0.01, size=(n, 16)) + x[0]   # a collapsed trigger cluster
    return np.concatenate([x, planted]), np.r_[np.zeros(1000), np.ones(n)]


def test_collapsed_cluster_larger_than_k_needs_the_absolute_k_distance():
    """Relative scores (SLOF, DAO) compare a point with its neighbours: inside a collapsed cluster of
    more than k points every neighbour is as crowded, so only the absolute k-distance sees it."""
    data, labels = planted_cluster(60)
    assert roc_auc_score(labels, score("kdist-dense", data)) > 0.99
    assert roc_auc_score(labels, score("slof-dense", data)) < 0.9


@pytest.mark.parametrize("name", ["kdist", "slof", "dao", "dao-both"])
def test_planted_isolated_points_are_found(name):
    x = cloud(1000)
    far = np.random.default_rng(2).normal(size=(20, 16)) * 4.0    # sparse outliers, as poisoned CLIP pairs
    data = np.concatenate([x, far])
    labels = np.r_[np.zeros(1000), np.ones(20)]
    assert roc_auc_score(labels, score(name, data)) > 0.97


@pytest.mark.parametrize("name", list(DETECTORS))
def test_uniform_cloud_has_no_suspects(name):
    x = np.random.default_rng(3).uniform(size=(1000, 8))
    labels = np.zeros(1000)
    labels[np.random.default_rng(4).choice(1000, 50, replace=False)] = 1   # arbitrary "poison"
    s = score(name, x)
    assert np.isfinite(s).all()
    assert 0.35 < roc_auc_score(labels, s) < 0.65


def test_auxiliary_reference_bank():
    bank, corpus = cloud(500, seed=5), cloud(300, seed=6)
    far = np.random.default_rng(7).normal(size=(10, 16)) * 4.0
    data = np.concatenate([corpus, far])
    s = density.dao(data, bank, k=16, direction="sparse")
    assert s.shape == (310,)
    assert roc_auc_score(np.r_[np.zeros(300), np.ones(10)], s) > 0.95


def test_lid_of_a_line_is_about_one():
    t = np.random.default_rng(10).uniform(size=(2000, 1))
    line = np.hstack([t, 2 * t, np.zeros_like(t)])
    dist, _ = knn(line, None, 16)
    assert np.median(density.lid_mle(dist)) == pytest.approx(1.0, abs=0.3)


def test_spectral_signature_finds_a_shifted_subpopulation():
    x = cloud(1000, d=32)
    x[:30] += 6.0 * np.eye(32)[0] + np.random.default_rng(8).normal(scale=0.1, size=(30, 32))
    labels = np.r_[np.ones(30), np.zeros(970)]
    assert roc_auc_score(labels, score("spectral", x)) > 0.95


def test_percentile_and_rank_fusion():
    ref = np.arange(10.0)
    np.testing.assert_allclose(percentile(np.array([-1.0, 4.0, 100.0]), ref), [0.0, 0.45, 1.0])
    a, b = np.array([0.0, 9.0, 5.0]), np.array([9.0, 9.0, 0.0])
    fused = rank_fusion({"a": a, "b": b}, {"a": ref, "b": ref})
    np.testing.assert_allclose(fused, [(0.05 + 0.95) / 2, 0.95, (0.55 + 0.05) / 2])
    with pytest.raises(ValueError, match="differ in length"):
        rank_fusion({"a": a, "b": b[:2]})


def test_rank_fusion_in_corpus_ranks_the_doubly_suspicious_first():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=500), rng.normal(size=500)
    a[0], b[0] = 5.0, 5.0
    a[1] = 6.0                                             # suspicious to one detector only
    fused = rank_fusion({"a": a, "b": b})
    assert fused.argmax() == 0


def test_unknown_detector_is_one_line():
    with pytest.raises(ValueError, match="unknown detector 'lof'"):
        score("lof", cloud(50))


def test_detection_metrics():
    from pipeline.detect.metrics import summary

    labels = np.r_[np.zeros(100), np.ones(100)]
    scores = np.r_[np.arange(100.0), np.arange(100.0) + 50]      # half the poisoned overlap the clean
    out = summary(labels, scores, threshold=98.5, median_rule=True)
    assert out["auc"] == pytest.approx(0.875)
    assert out["tpr"] == pytest.approx(0.51) and out["fpr"] == pytest.approx(0.01)
    assert out["tpr_at_1pct_fpr"] == pytest.approx(0.50)
    assert out["tpr_median"] + out["fpr_median"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both clean and poisoned"):
        summary(np.zeros(5), np.arange(5.0))


def test_the_default_plan_is_the_ensemble_flagged_by_the_ensemble():
    from pipeline.detect.spec import DEFAULT_ENSEMBLE, plan_detectors

    plan = plan_detectors()
    assert plan.names == tuple(dict.fromkeys(("dede", *DEFAULT_ENSEMBLE, "ensemble"))) and plan.flag_by == "ensemble"
    assert plan.members == DEFAULT_ENSEMBLE and plan.needs_embeddings
    assert plan_detectors("all").flag_by == "ensemble"                   # all computes the ensemble too


@pytest.mark.parametrize("detectors", ["dede", "dede,kdist", "slof:bank"])
def test_without_the_ensemble_the_default_flag_by_is_dede(detectors):
    from pipeline.detect.spec import plan_detectors

    assert plan_detectors(detectors).flag_by == "dede"
    assert plan_detectors("dede").names == ("dede",) and not plan_detectors("dede").needs_embeddings


def test_an_explicit_flag_by_wins_over_the_default():
    from pipeline.detect.spec import plan_detectors
    from pipeline.errors import BadInput

    assert plan_detectors("ensemble", "dede").flag_by == "dede"
    assert plan_detectors("ensemble", " Slof:Bank ").flag_by == "slof:bank"
    with pytest.raises(BadInput, match="--flag-by 'ensemble' is not one of the computed detectors"):
        plan_detectors("dede", "ensemble")
