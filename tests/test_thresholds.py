import numpy as np
import pytest

from pipeline.dede.thresholds import calibration_summary, fpr_threshold, gmm_threshold, needs_scores, resolve_threshold


def test_fpr_threshold_matches_the_empirical_quantile():
    s = np.arange(10000, dtype=float)
    cal = calibration_summary(s, paper_threshold=123.0)
    assert cal["n"] == 10000 and cal["mean"] == pytest.approx(4999.5)
    assert fpr_threshold(cal, 0.01) == pytest.approx(np.quantile(s, 0.99), rel=1e-6)
    assert fpr_threshold(cal, 0.05) == pytest.approx(np.quantile(s, 0.95), rel=1e-6)
    assert resolve_threshold("fpr:0.001", cal) == pytest.approx(np.quantile(s, 0.999), rel=1e-6)
    # on fresh clean data of the same distribution, the stated rate holds
    fresh = np.random.default_rng(0).uniform(0, 9999, 200000)
    assert np.mean(fresh > resolve_threshold("fpr:0.01", cal)) == pytest.approx(0.01, abs=0.002)


def test_other_policies_and_errors():
    cal = calibration_summary(np.ones(5), paper_threshold=42.0)
    assert resolve_threshold("paper", cal) == 42.0
    assert resolve_threshold("17.5", cal) == 17.5 and resolve_threshold(3, cal) == 3.0
    with pytest.raises(ValueError, match="unknown threshold policy"):
        resolve_threshold("median", cal)
    with pytest.raises(ValueError, match="fpr must lie"):
        resolve_threshold("fpr:1.5", cal)
    with pytest.raises(ValueError, match="needs the run's scores"):
        resolve_threshold("gmm", cal)
    assert needs_scores("gmm") and not needs_scores("fpr:0.01")
    with pytest.raises(ValueError, match="zero held-out"):
        calibration_summary(np.array([]), 1.0)


def test_gmm_separates_two_modes():
    rng = np.random.default_rng(1)
    clean = rng.lognormal(np.log(1000), 0.2, 9000)
    bad = rng.lognormal(np.log(8000), 0.2, 1000)
    t = gmm_threshold(np.concatenate([clean, bad]))
    assert np.quantile(clean, 0.99) < t < np.quantile(bad, 0.01)
