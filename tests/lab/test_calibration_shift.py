"""The calibration-shift check (jobs/lab_calibration_shift.py): the product's calibration holds its rate on counted
rows drawn like the auxiliary set, overshoots on rows drawn wider, and the table is generated from its JSON."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.dede.reference import CleanReference
from pipeline.lab import calibration_shift

RUN = {"config": {"detectors": ["ensemble"], "flag_by": None, "ensemble": ["dede", "norm:bank", "kdist-dense"],
                  "fusion": "mean", "threshold": "fpr:0.02", "bank_trim": 0.0}}


def rows(rng, n, spread=1.0):
    return {"embedding": (spread * rng.normal(size=(n, 8))).astype(np.float32),
            "score": rng.gamma(2.0, scale=spread, size=n).astype(np.float32),
            "difficulty": np.ones(n, np.float32)}


def test_rows_drawn_like_the_auxiliary_set_keep_the_rate_and_wider_rows_exceed_it():
    like, wider = [], []
    for seed in range(4):                         # one draw's in-corpus density rate alone spans 1-4% at fpr 2%
        rng = np.random.default_rng(seed)
        aux = rows(rng, 4000)
        clean = CleanReference(aux["score"][:1500], aux["embedding"][:1500], aux["embedding"][1500:],
                               aux["difficulty"][:1500])
        like.append(calibration_shift.realised(clean, rows(rng, 3000), RUN))
        wider.append(calibration_shift.realised(clean, rows(rng, 3000, spread=1.3), RUN))
    assert set(like[0]) == {"dede", "norm:bank", "kdist-dense", "ensemble"}
    means = {d: np.mean([r[d] for r in like]) for d in like[0]}
    assert all(0.012 <= m <= 0.03 for m in means.values()), means
    assert min(r["dede"] for r in wider) > 0.03 and min(r["norm:bank"] for r in wider) > 0.03


def test_an_image_detector_is_calibrated_on_the_hold_outs_scores_of_it():
    run = {"config": {**RUN["config"], "ensemble": ["dede", "transplant", "kdist-dense"]}}
    rates = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        aux, counted = rows(rng, 4000), rows(rng, 3000)
        aux["transplant"], counted["transplant"] = rng.random(4000), rng.random(3000)
        clean = CleanReference(aux["score"][:1500], aux["embedding"][:1500], aux["embedding"][1500:],
                               aux["difficulty"][:1500], holdout_transplant=aux["transplant"][:1500],
                               recipients=np.zeros((2, 32, 32, 3), np.uint8))
        rates.append(calibration_shift.realised(clean, counted, run))
        counted["transplant"] = counted["transplant"] + 0.5              # a shifted image detector overshoots
        assert calibration_shift.realised(clean, counted, run)["transplant"] > 0.3
    assert set(rates[0]) == {"dede", "transplant", "kdist-dense", "ensemble"}
    assert 0.012 <= np.mean([r["transplant"] for r in rates]) <= 0.03


def test_render_writes_one_row_per_detector_and_both_cases():
    cell = {"mean": 0.0125, "sd": 0.001, "min": 0.011, "max": 0.014, "in_band": 1.0}
    res = {"command": "jobs/lab_calibration_shift.py", "commit": "abc", "finished": "now", "victim": "v", "pool": "p",
           "seeds": 5, "splits": 2, "threshold": "fpr:0.01",
           "sizes": {"holdout": 1250, "bank": 3750, "test_rows": 10000},
           "summary": {case: {"dede": cell, "ensemble": cell} for case in calibration_shift.AUX_CASES}}
    md = calibration_shift.render(res)
    assert md.count("| 1.25% ± 0.10% [1.10%, 1.40%], in band 100% |") == 2
    assert "| ensemble |" in md and "10 measurements" in md


def test_a_missing_score_run_names_the_command_that_makes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DEDE_LAB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--calibration-seeds"):
        calibration_shift.find_run("decoder-x", "pool-clean-y")


def test_the_command_says_what_to_run_first_when_there_is_nothing_to_measure_or_render(tmp_path, capsys):
    from jobs import lab_calibration_shift

    assert lab_calibration_shift.main(["--render", "--results", str(tmp_path)]) != 0
    assert "run jobs/lab_calibration_shift.py without --render first" in capsys.readouterr().err
    assert lab_calibration_shift.main(["--results", str(tmp_path)]) != 0
    assert "--calibration-seeds 5 first" in capsys.readouterr().err


def test_stats_count_the_measurements_inside_the_issues_band():
    s = calibration_shift.stats([0.004, 0.005, 0.01, 0.015, 0.02])
    assert s == {"mean": 0.0108, "sd": 0.00605, "min": 0.004, "max": 0.02, "in_band": 0.6}
