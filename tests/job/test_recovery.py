"""Kills: a killed driver resumes to the same outputs; a killed scoring actor is replaced and the job
completes with every sample (issue 3, 'Done when' 2 and 3). Every run here is the default one: DeDe and
the ensemble, flagged by the ensemble (scoring, then the detectors' phase)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.job.config import JobConfig
from pipeline.job.run import run_job
from tests.job.recovery_utils import assert_same_outputs, ray_worker_pids, wait_for

REPO = Path(__file__).resolve().parents[2]
N_SHARDS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, cifar_test_samples):
    from pipeline.corpus.ingest import write_shards

    d = tmp_path_factory.mktemp("recovery_in")
    write_shards(iter(cifar_test_samples[:N_SHARDS * 30]), str(d), shard_size=30)
    return d


def _cfg(corpus, out, decoder, **kw):
    return JobConfig(inputs=[str(corpus)], out=str(out), decoder=decoder, batch_size=10, actors=1,
                     progress=False, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, tiny_decoder, ray_session):
    out = tmp_path_factory.mktemp("reference") / "out"
    run_job(_cfg(corpus, out, tiny_decoder))
    return out


def test_resume_after_killed_driver_equals_uninterrupted_run(tmp_path, corpus, tiny_decoder, reference, ray_session):
    out = tmp_path / "out"
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "score_corpus.py"), "--input", str(corpus),
                             "--decoder", tiny_decoder, "--out", str(out), "--batch-size", "10", "--actors", "1",
                             "--ray-address", address, "--no-progress"],
                            cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list((out / "stats").glob("*.json")), timeout=180)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # the driver (and only it: its own session) dies mid-run
        proc.wait()
    done = len(list((out / "stats").glob("*.json")))
    assert 1 <= done < N_SHARDS, "the kill did not land mid-run"
    assert not (out / "run.json").exists()
    run = run_job(_cfg(corpus, out, tiny_decoder))
    assert run["totals"]["read"] == N_SHARDS * 30 and run["flag_by"] == "ensemble"
    assert_same_outputs(out, reference)
    # resuming into these outputs with another threshold is refused (it would mix two splits)
    from pipeline.job.errors import JobError

    with pytest.raises(JobError, match="used another threshold than --threshold 0.5"):
        run_job(_cfg(corpus, out, tiny_decoder, threshold="0.5"))
    # and a finished run is a no-op: nothing left to score
    again = run_job(_cfg(corpus, out, tiny_decoder))
    assert again["timing"]["samples_this_run"] == 0
    assert_same_outputs(out, reference)


def test_killed_scoring_actor_is_replaced_and_every_sample_is_scored(tmp_path, corpus, tiny_decoder, reference,
                                                                       ray_session):
    out = tmp_path / "out"
    result, errors = {}, []

    def target():
        try:
            result["run"] = run_job(_cfg(corpus, out, tiny_decoder))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = threading.Thread(target=target)
    th.start()
    try:       # the scoring phase writes each shard's Parquet (the detectors' phase, then the stats, follow)
        wait_for(lambda: list((out / "scores").glob("*.parquet")), timeout=180)
        pids = ray_worker_pids("ShardScorer")
        assert pids, "no scoring actor found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed_at = len(list((out / "scores").glob("*.parquet")))
    finally:
        th.join(timeout=300)
    assert not th.is_alive() and not errors, errors
    assert 1 <= killed_at < N_SHARDS, "the kill did not land mid-run"
    assert result["run"]["flag_by"] == "ensemble"
    assert result["run"]["totals"]["read"] == N_SHARDS * 30
    assert result["run"]["timing"]["samples_this_run"] == N_SHARDS * 30
    assert_same_outputs(out, reference)


def test_a_shard_that_raises_is_reported_and_redone_on_rerun(tmp_path, corpus, tiny_decoder, reference, ray_session):
    from pipeline.job.errors import ShardsFailed
    from pipeline.job.ownership import claim_out

    out = tmp_path / "out"
    claim_out(str(out), tool="test", info={}, overwrite=False)
    (out / "clean" / "000002.tar").mkdir(parents=True)      # its clean tar cannot be published
    with pytest.raises(ShardsFailed, match="1 of 8 shards failed.*000002"):
        run_job(_cfg(corpus, out, tiny_decoder))
    assert len(list((out / "stats").glob("*.json"))) == 7 and not (out / "run.json").exists()
    (out / "clean" / "000002.tar").rmdir()
    run = run_job(_cfg(corpus, out, tiny_decoder))
    assert run["timing"]["samples_this_run"] == 30
    assert_same_outputs(out, reference)
