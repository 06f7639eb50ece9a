"""The job's own faults (issue 18): bounded attempts, bad thresholds, --overwrite and --out ownership,
double counting, full disks, changed sources, bad flags and unreachable inputs, the Ray address. The
runs are the default one (DeDe and the ensemble, flagged by the ensemble)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.apply_threshold import main as apply_main
from jobs.score_corpus import main as score_main
from pipeline.job import attempts
from pipeline.job import outputs as O
from pipeline.job.config import JobConfig
from pipeline.job.errors import JobError
from pipeline.job.jsonfile import write_json
from pipeline.job.ownership import MARKER, claim_out, remove_outputs
from pipeline.job.run import plan, run_job
from pipeline.job.schemas import check_json
from tests.job.faults import restore_file
from tests.job.recovery_utils import output_files

REPO = Path(__file__).resolve().parents[2]


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error:"), err
    return err[0]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {rel: (d / rel).read_bytes() for rel in output_files(d)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, cifar_test_samples):
    from pipeline.corpus.ingest import write_shards

    d = tmp_path_factory.mktemp("faults_job_in")
    write_shards(iter(cifar_test_samples[:30]), str(d), shard_size=10)
    return d


def _cfg(inputs, out, decoder, **kw) -> JobConfig:
    return JobConfig(inputs=[str(i) for i in inputs], out=str(out), decoder=decoder, batch_size=10, actors=1,
                     progress=False, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus, tiny_decoder, ray_session):
    out = tmp_path_factory.mktemp("faults_job_run") / "out"
    run_job(_cfg([corpus], out, tiny_decoder))
    return out


# --- 2b: bounded attempts ---------------------------------------------------------------------

def test_attempts_are_counted_across_deaths_and_bounded(tmp_path):
    out = str(tmp_path)
    calls = []

    def fails():
        calls.append(1)
        raise OSError("flaky store")

    row = attempts.attempt(fails, out, "a/000000", max_attempts=3)
    assert len(calls) == 3 and row["failed"].startswith("gave up after 3 attempts: OSError: flaky store")
    # a process that died twice left its record behind: the third start is the last
    write_json(attempts.record_url(out, "b/000000"), {"attempts": 2, "error": ""})
    calls.clear()
    row = attempts.attempt(lambda: calls.append(1) or {"read": 5}, out, "b/000000", max_attempts=3)
    assert calls == [1] and row == {**row, "read": 5, "failed": ""}
    assert not (tmp_path / ".attempts" / "b" / "000000.json").exists()      # cleared on success
    write_json(attempts.record_url(out, "c/000000"), {"attempts": 3, "error": ""})
    row = attempts.attempt(lambda: pytest.fail("must not run"), out, "c/000000", max_attempts=3)
    assert row["failed"] == "gave up after 3 attempts: the process scoring it died each time (out of memory?)"


@pytest.mark.parametrize("detectors", [[], ["--ensemble", "dede,slof:bank,norm:bank"]],
                         ids=["default-in-corpus", "bank-only"])
def test_a_shard_whose_actor_keeps_dying_is_reported_by_name(detectors, tmp_path, corpus, tiny_decoder, ray_session):
    """The others are split when every detector is fitted on the decoder's reference alone; with an in-corpus one
    (the default's kdist-dense) they are scored but not split, since its reference sample needs every shard."""
    out = tmp_path / "out"
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "job" / "dying_actor_script.py"), address, "000001", "--",
         "--input", str(corpus), "--decoder", tiny_decoder, "--out", str(out), "--batch-size", "10",
         "--actors", "1", "--max-attempts", "2", "--no-progress", *detectors],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("score_corpus: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "1 of 3 shards failed (000001: gave up after 2 attempts: the process scoring it died" in lines[0]
    assert sorted(p.name for p in (out / "scores").glob("*.parquet")) == ["000000.parquet", "000002.parquet"]
    stats = sorted(p.name for p in (out / "stats").glob("*.json"))
    if detectors:
        assert stats == ["000000.json", "000002.json"]
        assert json.loads((out / "stats" / "000000.json").read_text())["flag_by"] == "ensemble"
    else:
        assert stats == [] and "the others are scored but not split" in lines[0]
    assert not (out / "run.json").exists()


# --- 3: non-finite thresholds and strict JSON ---------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_apply_refuses_non_finite_or_negative_thresholds(value, finished, capsys):
    before = _snapshot(finished)
    assert apply_main(["--run", str(finished), "--threshold", value]) == 2
    assert "--threshold" in _one_error_line(capsys, "apply_threshold")
    assert _snapshot(finished) == before


def test_json_files_are_strict(tmp_path):
    with pytest.raises(ValueError):
        write_json(str(tmp_path / "x.json"), {"threshold": float("nan")})
    assert not list(tmp_path.iterdir())


# --- 4: --out ownership and --overwrite --------------------------------------------------------

def test_overwrite_never_deletes_folders_it_did_not_create(tmp_path, corpus, tiny_decoder, capsys):
    out = tmp_path / "out"
    (out / "clean").mkdir(parents=True)
    (out / "clean" / "precious.tar").write_bytes(b"user data")
    argv = ["--input", str(corpus), "--decoder", tiny_decoder, "--out", str(out)]
    for extra in ([], ["--overwrite"]):
        assert score_main(argv + extra) == 2
        assert "no .dede-run marker" in _one_error_line(capsys, "score_corpus")
    assert (out / "clean" / "precious.tar").read_bytes() == b"user data"
    assert sorted(p.name for p in out.iterdir()) == ["clean"]


def test_overwrite_removes_only_our_outputs(tmp_path):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "keep.txt").write_text("mine")
    (out / "README").write_text("mine too")
    claim_out(str(out), tool="test", info={}, overwrite=False)     # unrelated files only: allowed
    assert json.loads((out / MARKER).read_text())["tool"] == "test"
    for sub in ("stats", "scores", "clean", "quarantine", ".attempts", ".apply-1234"):
        (out / sub).mkdir()
        (out / sub / "x").write_text("ours")
    (out / "run.json").write_text("{}")
    claim_out(str(out), tool="test", info={}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "README", "notes"]
    (tmp_path / "unmarked").mkdir()
    with pytest.raises(JobError, match="no .dede-run marker"):
        remove_outputs(str(tmp_path / "unmarked"))


# --- 7: double counting, outputs inside the input, swapped --input/--out ----------------------

def test_one_shard_under_two_spellings_is_scored_once(tmp_path, corpus, tiny_decoder, monkeypatch):
    shutil.copytree(corpus, tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    p = plan(_cfg(["a/000000.tar", "a/../a/000000.tar", str(tmp_path / "a" / "000000.tar"), "./a/000001.tar"],
                  tmp_path / "out", tiny_decoder))
    assert p.urls == [str(tmp_path / "a" / "000000.tar"), str(tmp_path / "a" / "000001.tar")]
    assert p.stems == ["000000", "000001"]


def test_our_outputs_inside_the_input_are_not_inputs_and_swaps_are_refused(tmp_path, corpus, tiny_decoder):
    from pipeline.corpus.writer import write_tar

    shutil.copytree(corpus, tmp_path / "data")
    run1 = tmp_path / "data" / "run1"
    claim_out(str(run1), tool="test", info={}, overwrite=False)
    write_tar(str(run1 / "clean" / "000000.tar"), [("k.txt", b"x")])
    p = plan(_cfg([tmp_path / "data"], tmp_path / "data" / "run2", tiny_decoder))
    assert p.stems == ["000000", "000001", "000002"]
    with pytest.raises(JobError, match="were --input and --out swapped"):
        plan(_cfg([run1], tmp_path / "data", tiny_decoder))
    p = plan(_cfg([run1 / "clean"], tmp_path / "rescore", tiny_decoder))      # a run's clean shards: allowed
    assert p.stems == ["000000"]


# --- 9: a full disk leaves no temp files -------------------------------------------------------

@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_full_disk_leaves_no_temp_files(fail_at, tmp_path, corpus, tiny_decoder, monkeypatch):
    from pipeline.dede.scorer import Scorer
    from pipeline.job.shard import ShardTask, score_shard

    scorer = Scorer(tiny_decoder)
    out = tmp_path / "out"
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == fail_at:           # 1: the Parquet, 2: the clean tar, 3: the quarantine tar
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    task = ShardTask(url=str(corpus / "000000.tar"), stem="000000", out=str(out), threshold=1e9)
    with pytest.raises(OSError, match="No space left"):
        score_shard(scorer, task, batch_size=10)
    left = [p for p in out.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert not left, left
    assert not (out / "stats" / "000000.json").exists()


def test_the_temp_sweep_removes_only_our_temp_names(tmp_path):
    for rel in ("scores/.000000.parquet.%s.tmp", "clean/a/.000000.tar.%s.tmp", ".run.json.%s.tmp"):
        p = tmp_path / (rel % ("0" * 32))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    (tmp_path / "clean" / "user.tmp").write_bytes(b"keep")
    assert O.remove_temp_files(str(tmp_path)) == 3
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["user.tmp"]


# --- 11: changed sources ----------------------------------------------------------------------

def test_apply_refuses_a_changed_source_and_changes_nothing(finished, corpus, capsys):
    restore = restore_file(corpus / "000001.tar")
    before = _snapshot(finished)
    try:
        os.utime(corpus / "000001.tar", (1, 1))
        assert apply_main(["--run", str(finished), "--threshold", "0.0"]) == 2
        assert "changed since they were scored" in _one_error_line(capsys, "apply_threshold")
        assert _snapshot(finished) == before
    finally:
        restore()


def test_apply_that_fails_midway_changes_nothing(finished, corpus, capsys, cifar_test_samples):
    """A source changed in a way its stats cannot tell (no source record): the re-split fails while
    staging, and the old split, stats and run.json stay as they were."""
    from pipeline.corpus.ingest import write_shards

    stats_file = finished / "stats" / "000002.json"
    restore_stats, restore_src = restore_file(stats_file), restore_file(corpus / "000002.tar")
    try:
        st = json.loads(stats_file.read_text())
        st.pop("source")
        stats_file.write_text(json.dumps(st))
        before = _snapshot(finished)
        other = Path(str(corpus) + "_other")
        write_shards(iter(cifar_test_samples[100:105]), str(other), shard_size=5)
        shutil.copy(other / "000000.tar", corpus / "000002.tar")
        capsys.readouterr()
        assert apply_main(["--run", str(finished), "--threshold", "0.0"]) == 2
        assert "nothing was changed" in _one_error_line(capsys, "apply_threshold")
        assert _snapshot(finished) == before
    finally:
        restore_src()
        restore_stats()


def test_resume_rescores_a_source_that_changed(tmp_path, finished, corpus, tiny_decoder, ray_session):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    restore = restore_file(corpus / "000000.tar")
    try:
        os.utime(corpus / "000000.tar", (2, 2))
        run = run_job(_cfg([corpus], out, tiny_decoder))
        assert run["timing"]["samples_this_run"] == 10 and run["totals"]["read"] == 30
        assert run["flag_by"] == "ensemble" and run["config"]["detectors"] == ["ensemble"]
        assert O.read_json(O.stats_url(str(out), "000000"))["source"]["mtime"] == 2.0
        check_json(run, "run.schema.json")
    finally:
        restore()


# --- 12, 13: flags and inputs, checked before Ray starts ----------------------------------------

@pytest.mark.parametrize("flag,value", [("--max-shards", "-1"), ("--max-shards", "0"), ("--batch-size", "0"),
                                        ("--actors", "0"), ("--threads", "0"), ("--max-attempts", "0"),
                                        ("--threshold", "nan")])
def test_bad_numbers_are_refused(flag, value, tmp_path, corpus, tiny_decoder, capsys):
    out = tmp_path / "out"
    assert score_main(["--input", str(corpus), "--decoder", tiny_decoder, "--out", str(out), flag, value]) == 2
    assert flag in _one_error_line(capsys, "score_corpus")
    assert not out.exists()


def test_bad_inputs_are_one_line(tmp_path, corpus, tiny_decoder, capsys):
    out = tmp_path / "out"
    cases = [(["--input", "http://127.0.0.1:9/corpus/000000.tar", "--decoder", tiny_decoder],
              "cannot list --input http://127.0.0.1:9/corpus/000000.tar"),
             (["--input", str(corpus), "--decoder", str(Path(tiny_decoder) / "config.json")], "not a folder")]
    for argv, want in cases:
        assert score_main(argv + ["--out", str(out)]) == 2
        assert want in _one_error_line(capsys, "score_corpus")
    assert not out.exists()


def test_relative_and_absolute_inputs_mix(tmp_path, corpus, tiny_decoder, monkeypatch):
    shutil.copytree(corpus, tmp_path / "a")
    shutil.copytree(corpus, tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    p = plan(_cfg(["a", str(tmp_path / "b")], "out", tiny_decoder))
    assert p.stems == [f"{d}/00000{i}" for d in "ab" for i in range(3)]


# --- 15: the Ray address --------------------------------------------------------------------------

@pytest.mark.parametrize("flag,env,want", [(None, None, "local"), (None, "10.0.0.1:6379", "10.0.0.1:6379"),
                                           ("ray://h:10001", "10.0.0.1:6379", "ray://h:10001")])
def test_embedded_ray_unless_an_address_is_given(flag, env, want, monkeypatch, tmp_path):
    import ray

    from pipeline.job.run import _ensure_ray

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kw: seen.setdefault("address", address))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert _ensure_ray(JobConfig(inputs=[], out=str(tmp_path), decoder="", ray_address=flag)) is True
    assert seen["address"] == want
