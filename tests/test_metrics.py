"""Detection metrics: the hand-written AUC equals sklearn's, ties included; the oracle TPR holds its FPR."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.detect.metrics import auc, tpr_at_fpr


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearns_with_ties_counted_half(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(3000) < 0.1
    scores = np.round(rng.normal(size=y.size) + 0.8 * y, 1)          # rounded: many ties across the classes
    assert auc(y, scores) == pytest.approx(roc_auc_score(y.astype(int), scores), abs=1e-12)
    assert auc(y, -scores) == pytest.approx(1.0 - auc(y, scores), abs=1e-12)


def test_auc_refuses_one_class_and_non_finite_scores():
    with pytest.raises(ValueError, match="both clean and poisoned"):
        auc(np.zeros(4, bool), np.arange(4.0))
    with pytest.raises(ValueError, match="finite"):
        auc(np.array([0, 1, 0, 1]), np.array([0.1, np.nan, 0.3, 0.4]))


def test_tpr_at_fpr_flags_at_most_that_share_of_the_clean_rows():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(10000, bool), np.ones(500, bool)]
    scores = rng.normal(size=y.size) + 3.0 * y
    t = np.quantile(scores[~y], 0.99, method="higher")
    assert (scores[~y] > t).mean() <= 0.01
    assert tpr_at_fpr(y, scores, 0.01) == pytest.approx((scores[y] > t).mean())
    assert 0.6 < tpr_at_fpr(y, scores, 0.01) < 0.8                    # P(N(3, 1) > 2.33) = 0.75
