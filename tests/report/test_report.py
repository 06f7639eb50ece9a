"""The score analysis of issue 14 on small runs written without Ray (tests/report/runs.py)."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import BadInput
from pipeline.job.schemas import check_json
from pipeline.report import datacomp
from pipeline.report.analyze import analyze_run
from pipeline.report.clusters import caption_words, largest_cluster
from pipeline.report.verdict import verdict
from tests.report.runs import make_run
from tests.test_cli_contract import load, one_line_error

ROOT = Path(__file__).resolve().parents[2]


def _analyze(run, **kw):
    return analyze_run(run, progress=False, **kw)


# --- the verdict: the binomial test both ways ---------------------------------------------------

def test_verdict_at_the_promised_rate_is_no_evidence():
    v = verdict(102, 10_000, 0.01, "fpr:0.01")
    assert v.backdoor is False and v.line == "no evidence of backdoor activity"
    assert v.p_value > 0.99


def test_verdict_tolerates_calibration_error_at_corpus_scale():
    """1.2% flagged on a million clean samples is calibration error, not a backdoor (null: 1.5 x 1%)."""
    assert verdict(12_000, 1_000_000, 0.01, "fpr:0.01").backdoor is False
    v = verdict(17_000, 1_000_000, 0.01, "fpr:0.01")
    assert v.backdoor is True and v.p_value < 1e-9


def test_verdict_below_the_promised_rate_is_no_evidence():
    v = verdict(20, 10_000, 0.01, "fpr:0.01")
    assert v.backdoor is False and v.p_value > 0.99


def test_verdict_well_above_the_promised_rate_is_backdoor_activity():
    v = verdict(390, 10_000, 0.01, "fpr:0.01")
    assert v.backdoor is True
    assert v.line == "backdoor activity: 3.9% flagged where 1.0% is expected (p < 1e-9)"


def test_verdict_without_an_expected_rate_says_so():
    v = verdict(390, 10_000, None, "no expected rate: threshold policy gmm and no readable decoder calibration")
    assert v.backdoor is None and "no expected rate" in v.line


def test_clean_run_gives_no_evidence(tmp_path):
    s = _analyze(make_run(tmp_path, clean_rate=0.01))
    assert s["verdict"]["backdoor"] is False
    assert s["verdict"]["line"] == "no evidence of backdoor activity"
    assert s["complete"] is True


def test_poisoned_run_gives_backdoor_activity_and_finds_the_target(tmp_path):
    s = _analyze(make_run(tmp_path, poisoned=0.04, clean_rate=0.01))
    v = s["verdict"]
    assert v["backdoor"] is True and v["line"].startswith("backdoor activity: ")
    assert v["p_value"] < 1e-9 and v["expected_rate"] == 0.01
    c = s["cluster"]
    assert c["suspected"] and c["size"] >= 0.7 * v["flagged"] * 0.8
    assert s["caption_words"][0]["word"] in ("banana", "yellow")
    assert {w["word"] for w in s["caption_words"][:2]} == {"banana", "yellow"}
    page = html.unescape((tmp_path / "run" / "report" / "report.html").read_text())
    assert v["line"] in page and "banana" in page


# --- the cluster finder -------------------------------------------------------------------------

def test_cluster_finder_returns_exactly_the_planted_cluster():
    rng = np.random.default_rng(3)
    spread = rng.normal(size=(250, 32))
    planted = rng.normal(size=32) + 0.02 * rng.normal(size=(40, 32))
    keys = [f"c{i}" for i in range(250)] + [f"p{i}" for i in range(40)]
    c = largest_cluster(np.concatenate([spread, planted]), keys, rng.normal(size=(2000, 32)))
    assert c.suspected and c.members == sorted(f"p{i}" for i in range(40))


def test_cluster_finder_finds_no_target_among_clean_flagged_samples():
    rng = np.random.default_rng(4)
    for d in (8, 32):
        c = largest_cluster(rng.normal(size=(400, d)), [f"c{i}" for i in range(400)], rng.normal(size=(3000, d)))
        assert not c.suspected


def test_caption_words_name_the_over_represented_word_only():
    flagged = ["a photo of a banana"] * 30 + ["a photo of a dog"] * 10
    kept = ["a photo of a dog"] * 500 + ["a photo of a cat"] * 500 + ["a banana"] * 5
    assert [w["word"] for w in caption_words(flagged, kept)] == ["banana"]
    assert caption_words(["a dog"] * 10, ["a dog"] * 1000) == []


# --- what a run without embeddings or captions still gives --------------------------------------

def test_run_without_embeddings_or_captions_still_gives_a_report(tmp_path):
    s = _analyze(make_run(tmp_path, poisoned=0.04, captions=False, embeddings=False))
    assert s["cluster"] is None and s["caption_words"] is None
    assert s["verdict"]["backdoor"] is True
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "No embeddings stored" in page and "No captions" in page
    assert sum(t["has_image"] for t in s["gallery"]) == len(s["gallery"]) > 0


def test_outputs_list_every_row_once_and_summary_validates(tmp_path):
    run = make_run(tmp_path, poisoned=0.03)
    s = _analyze(run)
    rep = tmp_path / "run" / "report"
    assert sorted(os.listdir(rep)) == ["flagged.parquet", "keep.parquet", "report.html", "summary.json"]
    on_disk = json.loads((rep / "summary.json").read_text())
    check_json(on_disk, "summary.schema.json")
    assert on_disk == s
    flagged, keep = pq.read_table(rep / "flagged.parquet"), pq.read_table(rep / "keep.parquet")
    assert flagged.column_names == ["key", "shard", "index", "score"]
    assert flagged.num_rows == s["counts"]["flagged"] == sum(r["flagged"] for r in s["shards"])
    assert keep.num_rows == s["counts"]["kept"] == sum(r["kept"] for r in s["shards"])
    assert flagged.num_rows + keep.num_rows + s["counts"]["errored"] == s["counts"]["read"] == 2000
    assert min(flagged.column("score").to_pylist()) > s["threshold"]["value"] >= max(keep.column("score").to_pylist())
    assert s["errors"] == [{"kind": "decode", "count": 4, "examples": s["errors"][0]["examples"]}]
    assert len(s["errors"][0]["examples"]) == 4
    assert sum(s["histogram"]["counts"]) == s["counts"]["scored"]


def test_a_poisoned_shard_stands_out_in_the_shard_table(tmp_path):
    from pipeline.report.verdict import shard_rows

    base = {"read": 1000, "errored": 0, "shard": "x"}
    stats = [{**base, "stem": f"{i}", "flagged": 10, "kept": 990} for i in range(9)]
    stats.append({**base, "stem": "9", "flagged": 80, "kept": 920})
    rows = shard_rows(stats)
    assert [r["stem"] for r in rows if r["stands_out"]] == ["9"]


# --- DataComp uid lists -------------------------------------------------------------------------

def test_datacomp_npy_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    uids = [f"{rng.integers(0, 2**63):016x}{rng.integers(0, 2**63):016x}" for _ in range(100)]
    arr = datacomp.uid_array(uids)
    p = tmp_path / "u.npy"
    p.write_bytes(datacomp.npy_bytes(arr))
    back = np.load(p, allow_pickle=False)
    assert back.dtype == np.dtype("u8,u8") and back.shape == (100,)
    assert datacomp.uid_strings(back) == sorted(uids)
    assert np.all(np.diff(back["f0"].astype(object) * 2**64 + back["f1"].astype(object)) > 0)
    with pytest.raises(BadInput):
        datacomp.uid_array(["not-a-uid"])


def test_run_with_uids_writes_sorted_keep_and_removal_lists(tmp_path):
    s = _analyze(make_run(tmp_path, poisoned=0.02, uids=True))
    rep = tmp_path / "run" / "report"
    keep, remove = np.load(rep / "keep_uids.npy"), np.load(rep / "remove_uids.npy")
    assert len(keep) == s["counts"]["kept"] and len(remove) == s["counts"]["flagged"] + s["counts"]["errored"]
    assert np.all(np.sort(keep, order=("f0", "f1")) == keep)
    assert not set(datacomp.uid_strings(keep)) & set(datacomp.uid_strings(remove))
    assert s["files"]["uids"] == {"keep_uids.npy": len(keep), "remove_uids.npy": len(remove)}


# --- incomplete runs ----------------------------------------------------------------------------

def test_run_with_shards_missing_stats_is_reported_incomplete(tmp_path):
    s = _analyze(make_run(tmp_path, stats_for=3))
    assert s["complete"] is False
    assert any("1 of 4 shards have no stats" in r for r in s["incomplete"])
    assert "Incomplete run" in (tmp_path / "run" / "report" / "report.html").read_text()


def test_run_without_run_json_is_reported_incomplete(tmp_path):
    s = _analyze(make_run(tmp_path, run_json=False))
    assert s["complete"] is False and "no run.json" in s["incomplete"][0]
    assert s["verdict"]["backdoor"] is None          # no policy without run.json, no decoder


# --- bad input: one line, exit 2, nothing written -----------------------------------------------

@pytest.fixture(scope="module")
def cli():
    return load(ROOT / "jobs" / "analyze_scores.py")


def _refused(cli, capsys, argv, folder, needle):
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    one_line_error(err)
    assert needle in err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, cli, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    _refused(cli, capsys, [str(tmp_path)], tmp_path, "is not a scoring run")


def test_a_run_with_zero_samples_is_refused(tmp_path, cli, capsys):
    from pipeline.job import outputs as O

    O.write_parquet(O.scores_url(str(tmp_path), "000000"), O.rows_table([], 1.0, "ab" * 32))
    _refused(cli, capsys, [str(tmp_path)], tmp_path, "holds no samples")


def test_a_corrupt_parquet_is_refused(tmp_path, cli, capsys):
    run = Path(make_run(tmp_path, shards=2, per_shard=50))
    p = run / "scores" / "000001.parquet"
    p.write_bytes(p.read_bytes()[:200] + b"garbage" * 50)
    _refused(cli, capsys, [str(run)], run, "000001.parquet is not a readable Parquet file")


def test_the_cli_prints_the_verdict_and_the_report_path(tmp_path, cli, capsys):
    run = make_run(tmp_path, poisoned=0.04)
    assert cli.main([run, "--no-progress", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("backdoor activity: ")
    assert out[1] == f"report: {tmp_path / 'rep'}/report.html"
    assert (tmp_path / "rep" / "report.html").exists()


# --- score_corpus runs the analysis at the end --------------------------------------------------

def test_score_corpus_reports_at_the_end_and_a_failed_report_is_one_warning(tmp_path):
    from pipeline.report.analyze import report_after_run

    run = make_run(tmp_path, poisoned=0.04)
    lines: list[str] = []
    report_after_run(run, "score_corpus", False, lines.append)
    assert lines[0].startswith("backdoor activity: ") and lines[1] == f"report: {run}/report/report.html"
    lines.clear()
    (tmp_path / "empty").mkdir()
    report_after_run(str(tmp_path / "empty"), "score_corpus", False, lines.append)
    assert len(lines) == 1 and lines[0].startswith("score_corpus: warning: no report (")
    assert not list((tmp_path / "empty").iterdir())


def test_score_corpus_no_report_flag():
    sc = load(ROOT / "jobs" / "score_corpus.py")
    base = ["--input", "x", "--decoder", "d", "--out", "o"]
    assert sc.config(sc.build_parser().parse_args(base)).report is True
    assert sc.config(sc.build_parser().parse_args([*base, "--no-report"])).report is False
