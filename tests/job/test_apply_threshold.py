"""apply_threshold re-splits from stored scores with the same code path as the job: its outputs equal
a fresh job run at that threshold, byte for byte (issue 3, item 5)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.apply_threshold import main as apply_main
from pipeline.job import outputs as O
from pipeline.job.config import JobConfig
from pipeline.job.run import run_job
from pipeline.job.schemas import check_json, check_parquet
from tests.job.recovery_utils import assert_same_outputs


def _cfg(shards, out, decoder, threshold):
    """DeDe alone: these tests re-split by DeDe's `score` column (and use `paper`, DeDe's only); the
    ensemble's re-split is test_detectors_job.py's."""
    return JobConfig(inputs=[str(shards)], out=str(out), decoder=decoder, threshold=threshold, batch_size=16,
                     actors=1, progress=False, detectors=["dede"])


def _scores(out, stems):
    return np.concatenate([O.read_parquet(O.scores_url(str(out), s)).column("score").to_numpy(zero_copy_only=False)
                           for s in stems])


def test_apply_threshold_equals_a_fresh_run(tmp_path, cifar_shard_dir, tiny_decoder, ray_session):
    first = tmp_path / "first"
    run = run_job(_cfg(cifar_shard_dir, first, tiny_decoder, "fpr:0.01"))
    stems = [s["stem"] for s in run["shards"]]
    scores = _scores(first, stems)
    # far from the default's split (the tiny decoder's calibration varies from session to session)
    t = float(np.quantile(scores, 0.7 if run["totals"]["flagged"] < 0.5 * len(scores) else 0.1))
    assert apply_main(["--run", str(first), "--threshold", repr(t)]) == 0
    new = json.loads((first / "run.json").read_text())
    check_json(new, "run.schema.json")
    assert new["threshold"]["value"] == t and new["applied_threshold"]["previous"]["policy"] == "fpr:0.01"
    assert new["totals"]["flagged"] == int((scores > t).sum()) != run["totals"]["flagged"]
    np.testing.assert_array_equal(_scores(first, stems), scores)      # not re-scored
    for stem in stems:
        check_parquet(O.read_parquet(O.scores_url(str(first), stem)))
        check_json(O.read_json(O.stats_url(str(first), stem)), "stats.schema.json")
    fresh = tmp_path / "fresh"
    run_job(_cfg(cifar_shard_dir, fresh, tiny_decoder, repr(t)))
    assert_same_outputs(first, fresh)

    # a run.json recorded before the detectors (no flag_by, no detectors) is re-split by DeDe's score
    legacy = json.loads((first / "run.json").read_text())
    for key in ("flag_by", "detectors"):
        legacy.pop(key)
    for key in ("detectors", "flag_by", "ensemble", "fusion", "density_reference", "bank_trim"):
        legacy["config"].pop(key)
    (first / "run.json").write_text(json.dumps(legacy))
    t2 = float(np.quantile(scores, 0.5))
    assert apply_main(["--run", str(first), "--threshold", repr(t2)]) == 0
    again = json.loads((first / "run.json").read_text())
    assert again["flag_by"] == "dede" and again["totals"]["flagged"] == int((scores > t2).sum())


def test_gmm_job_scores_first_then_splits_like_apply_gmm(tmp_path, cifar_shard_dir, tiny_decoder, ray_session):
    gmm = tmp_path / "gmm"
    run = run_job(_cfg(cifar_shard_dir, gmm, tiny_decoder, "gmm"))
    assert run["threshold"]["policy"] == "gmm" and np.isfinite(run["threshold"]["value"])
    stems = [s["stem"] for s in run["shards"]]
    for stem in stems:
        t = O.read_parquet(O.scores_url(str(gmm), stem))
        check_parquet(t)
        thresholds = set(t.column("threshold").to_pylist())
        assert len(thresholds) == 1 and thresholds.pop() == pytest.approx(run["threshold"]["value"], rel=1e-6)
    other = tmp_path / "other"
    run_job(_cfg(cifar_shard_dir, other, tiny_decoder, "paper"))
    assert apply_main(["--run", str(other), "--threshold", "gmm"]) == 0
    assert_same_outputs(gmm, other)


def test_apply_threshold_bad_input(tmp_path, capsys):
    assert apply_main(["--run", str(tmp_path / "nothing"), "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.json is missing" in err[0]
