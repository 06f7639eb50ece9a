import numpy as np
import pytest

import argparse
import math

from pipeline.dede.thresholds import (ThresholdPolicy, calibration_summary, fpr_threshold, gmm_threshold, needs_scores,
                                      parse_threshold, resolve_threshold, threshold_arg)
from pipeline.errors import BadInput


def test_fpr_threshold_matches_the_empirical_quantile():
    s = np.arange(10000, dtype=float)
    cal = calibration_summary(s, paper_threshold=123.0)
    assert cal.n == 10000 and cal.mean == pytest.approx(4999.5)
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
    with pytest.raises(BadInput, match="not a known policy"):
        resolve_threshold("median", cal)
    with pytest.raises(BadInput, match="strictly between 0 and 1"):
        resolve_threshold("fpr:1.5", cal)
    with pytest.raises(BadInput, match="needs the run's scores"):
        resolve_threshold("gmm", cal)
    with pytest.raises(BadInput, match="needs the decoder's calibration"):
        resolve_threshold("fpr:0.01", None)
    with pytest.raises(ValueError, match="fpr must lie"):
        fpr_threshold(cal, 0.0)
    assert needs_scores("gmm") and not needs_scores("fpr:0.01")
    with pytest.raises(ValueError, match="zero held-out"):
        calibration_summary(np.array([]), 1.0)


def test_gmm_separates_two_modes():
    rng = np.random.default_rng(1)
    clean = rng.lognormal(np.log(1000), 0.2, 9000)
    bad = rng.lognormal(np.log(8000), 0.2, 1000)
    t = gmm_threshold(np.concatenate([clean, bad]))
    assert np.quantile(clean, 0.99) < t < np.quantile(bad, 0.01)


@pytest.mark.parametrize("text,kind,value", [("fpr:0.01", "fpr", 0.01), (" FPR:0.2 ", "fpr", 0.2), ("paper", "paper", None),
                                             ("gmm", "gmm", None), ("17.5", "number", 17.5), ("0", "number", 0.0),
                                             (3, "number", 3.0), ("1e3", "number", 1000.0)])
def test_parse_threshold_accepts_the_four_forms(text, kind, value):
    p = parse_threshold(text)
    assert p == ThresholdPolicy(kind, value)
    assert parse_threshold(str(p)) == p and parse_threshold(p) is p
    assert p.needs_scores == (kind == "gmm") and p.needs_calibration == (kind in ("fpr", "paper"))


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "-1", float("nan"), float("inf"), "fpr:nan", "fpr:0",
                                  "fpr:1", "fpr:-0.1", "fpr:1.5", "fpr:", "fpr:abc", "median", "", "paper2"])
def test_parse_threshold_rejects_everything_else_in_one_line(text):
    with pytest.raises(BadInput) as e:
        parse_threshold(text)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--threshold ") and "fpr:X" in msg and "gmm" in msg


def test_resolve_threshold_is_always_finite():
    cal = calibration_summary(np.arange(100.0), paper_threshold=float("nan"))
    with pytest.raises(BadInput, match="not a finite number"):
        resolve_threshold("paper", cal)
    with pytest.raises(BadInput, match="nan"):
        resolve_threshold("nan", cal)
    assert math.isfinite(resolve_threshold(ThresholdPolicy("fpr", 0.01), cal))
    with pytest.raises(BadInput, match="gmm needs at least 10"):
        resolve_threshold("gmm", cal, np.array([1.0, float("nan")]))


def test_threshold_arg_is_an_argparse_type():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threshold", type=threshold_arg, default=parse_threshold("fpr:0.01"))
    assert ap.parse_args(["--threshold", "paper"]).threshold == ThresholdPolicy("paper")
    assert ap.parse_args([]).threshold == ThresholdPolicy("fpr", 0.01)
    with pytest.raises(argparse.ArgumentTypeError, match="not a finite number"):
        threshold_arg("nan")
