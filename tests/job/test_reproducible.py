"""A repeated, a resumed and a retried run write byte-identical outputs on shards with broken images
(issue 18): error texts carry no addresses, writers are deterministic, a redone shard rewrites the same bytes.
The repeated and resumed runs are the default (the ensemble); the retried shard is DeDe's one pass."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pipeline.job.config import JobConfig
from pipeline.job.run import run_job
from tests.job.faults import build_fault_corpus
from tests.job.recovery_utils import output_files

OUTPUTS = ("scores/", "clean/", "quarantine/")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, cifar_test_samples) -> Path:
    root = tmp_path_factory.mktemp("reproducible") / "in"
    build_fault_corpus(root, cifar_test_samples[:20])
    return root


def _cfg(inputs: Path, out: Path, decoder: str, **kw) -> JobConfig:
    return JobConfig(inputs=[str(inputs)], out=str(out), decoder=decoder, batch_size=8, actors=1, progress=False,
                     **kw)


def _outputs(out: Path) -> dict[str, bytes]:
    return {rel: (out / rel).read_bytes() for rel in output_files(out) if rel.startswith(OUTPUTS)}


def test_repeated_and_resumed_default_runs_are_byte_identical(tmp_path, faulty, tiny_decoder, ray_session):
    """The default run (DeDe and the ensemble, flagged by the ensemble): its Parquet with the det_*
    columns and embeddings and its tars, repeated and resumed, byte for byte."""
    first_run = run_job(_cfg(faulty, tmp_path / "a", tiny_decoder))
    assert first_run["flag_by"] == "ensemble"
    first = _outputs(tmp_path / "a")
    assert any(rel.startswith("quarantine/faults/") for rel in first)
    assert b"det_ensemble" in first["scores/faults/000000.parquet"]

    run_job(_cfg(faulty, tmp_path / "b", tiny_decoder))                      # repeated
    assert _outputs(tmp_path / "b") == first

    for sub, ext in (("stats", "json"), ("scores", "parquet"), ("clean", "tar"), ("quarantine", "tar")):
        (tmp_path / "a" / sub / "faults" / f"000000.{ext}").unlink(missing_ok=True)   # as a killed run leaves it
    (tmp_path / "a" / "stats" / "truncated" / "000000.json").unlink()   # killed before its stats, outputs left
    resumed = run_job(_cfg(faulty, tmp_path / "a", tiny_decoder))            # resumed
    assert resumed["timing"]["samples_this_run"] > 0
    assert _outputs(tmp_path / "a") == first


def test_a_retried_shard_rewrites_the_same_bytes(tmp_path, faulty, tiny_decoder, ray_session, monkeypatch):
    """DeDe alone (score_shard writes and routes in one pass): a write that fails midway, then the retry."""
    first_run = run_job(_cfg(faulty, tmp_path / "a", tiny_decoder, detectors=["dede"]))
    first = _outputs(tmp_path / "a")

    from pipeline.dede.scorer import Scorer
    from pipeline.job.shard import ShardTask, score_shard

    task = ShardTask(url=str(faulty / "faults" / "000000.tar"), stem="faults/000000", out=str(tmp_path / "c"),
                     threshold=first_run["threshold"]["value"])
    scorer = Scorer(tiny_decoder)
    real, calls = os.fsync, []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:                                                  # the clean tar's write fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        score_shard(scorer, task, batch_size=8)
    monkeypatch.setattr(os, "fsync", real)
    score_shard(scorer, task, batch_size=8)                                  # retried
    retried = _outputs(tmp_path / "c")
    assert retried and retried == {rel: data for rel, data in first.items() if "/faults/" in rel}
