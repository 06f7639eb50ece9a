"""score_corpus --detectors: the embedding detectors' columns, flagged by the --flag-by detector, every
sample routed once, resume a no-op, other detectors refused, apply_threshold by the flag-by column; bad
detector names and decoders without a clean reference are one line before Ray starts."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jobs.apply_threshold import main as apply_main
from jobs.score_corpus import main
from pipeline.corpus.reader import iter_shard
from pipeline.detect.ensemble import DEFAULT_FUSION
from pipeline.job import outputs as O
from pipeline.job.schemas import check_json, check_parquet

DETECTORS = "dede,dede-rel,dede-region,occlusion,kdist-dense,slof:bank,kdist:bank,ensemble"   # the default ensemble: +transplant
COLUMNS = {"dede": "score", "dede-rel": "det_dede_rel", "dede-region": "det_dede_region", "transplant": "det_transplant",
           "occlusion": "det_occlusion",
           "kdist-dense": "det_kdist_dense", "slof:bank": "det_slof_bank",
           "kdist:bank": "det_kdist_bank", "ensemble": "det_ensemble"}


def _argv(inputs, decoder, out, *extra):
    return ["--input", str(inputs), "--decoder", decoder, "--out", str(out), "--batch-size", "16", "--actors", "1",
            "--no-progress", *extra]


def _samples(url: str) -> int:
    return len({s.key for s in iter_shard(url)})


def _check_split(out, run, column):
    """Every shard: schema-valid, flagged exactly where the flag-by column is over the threshold, and
    read = kept (clean tar) + flagged and errored (quarantine tar)."""
    read = 0
    for shard in run["shards"]:
        stem = shard["stem"]
        t = O.read_parquet(O.scores_url(str(out), stem))
        check_parquet(t)
        stats = O.read_json(O.stats_url(str(out), stem))
        check_json(stats, "stats.schema.json")
        values = t.column(column).to_numpy(zero_copy_only=False)
        threshold = t.column("threshold").to_numpy(zero_copy_only=False)
        ok = np.asarray(t.column("status").to_pylist()) == "ok"
        flagged = t.column("flagged").to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(flagged, ok & (np.nan_to_num(values, nan=-np.inf) > threshold))
        assert _samples(O.clean_url(str(out), stem)) == stats["kept"]
        assert _samples(O.quarantine_url(str(out), stem)) == stats["flagged"] + stats["errored"]
        assert stats["read"] == t.num_rows == stats["kept"] + stats["flagged"] + stats["errored"]
        read += stats["read"]
    assert read == run["totals"]["read"] == 160


def test_detectors_flag_by_the_ensemble_end_to_end(tmp_path, cifar_shard_dir, tiny_decoder, ray_session, capsys):
    out = tmp_path / "run"
    argv = _argv(cifar_shard_dir, tiny_decoder, out, "--detectors", DETECTORS, "--flag-by", "ensemble",
                 "--bank-trim", "0.02")
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    check_json(run, "run.schema.json")
    assert run["config"]["bank_trim"] == 0.02
    assert run["flag_by"] == "ensemble" and run["config"]["fusion"] == DEFAULT_FUSION
    assert {n: d["column"] for n, d in run["detectors"].items()} == COLUMNS
    assert run["detectors"]["ensemble"]["flagged"] == run["totals"]["flagged"]
    assert run["threshold"]["value"] == run["detectors"]["ensemble"]["threshold"]
    table = O.read_parquet(O.scores_url(str(out), run["shards"][0]["stem"]))
    assert {"embedding", "difficulty", *COLUMNS.values()} <= set(table.column_names)   # embeddings kept unasked
    ok = np.asarray(table.column("status").to_pylist()) == "ok"
    difficulty = table.column("difficulty").to_numpy(zero_copy_only=False)
    assert (difficulty[ok] > 0).all() and np.isnan(difficulty[~ok]).all()
    for name in ("occlusion", "transplant"):                                   # the image detectors' own columns
        raw = table.column(name).to_numpy(zero_copy_only=False)
        assert np.isfinite(raw[ok]).all() and np.isnan(raw[~ok]).all()
        np.testing.assert_allclose(table.column(f"det_{name}").to_numpy(zero_copy_only=False)[ok], raw[ok])
    _check_split(out, run, "det_ensemble")
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["verdict"]["flagged"] == run["totals"]["flagged"]
    capsys.readouterr()

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "report" not in p.parts
              and p.name != "run.json"}
    assert main(argv + ["--no-report"]) == 0                                   # resume: nothing left to do
    assert "4 already done, 0 to score" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in before} == before

    assert main(_argv(cifar_shard_dir, tiny_decoder, out, "--detectors", "dede,kdist")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other detectors" in err[0] and "use --overwrite" in err[0], err

    assert apply_main(["--run", str(out), "--threshold", "0.9"]) == 0          # re-split by det_ensemble
    again = json.loads((out / "run.json").read_text())
    assert again["flag_by"] == "ensemble" and again["detectors"]["ensemble"]["threshold"] == pytest.approx(0.9)
    _check_split(out, again, "det_ensemble")

    stored = {c: table.column(c) for c in ("score", "difficulty", "occlusion", "transplant", "embedding")}
    assert main(_argv(cifar_shard_dir, tiny_decoder, out, "--detectors", "transplant,kdist,ensemble", "--ensemble",
                      "dede,transplant", "--fusion", "mean", "--redetect")) == 0                  # another ensemble
    assert "the detectors again from their stored scores" in capsys.readouterr().out
    redone = json.loads((out / "run.json").read_text())
    assert set(redone["detectors"]) == {"dede", "transplant", "kdist", "ensemble"}
    assert redone["config"]["ensemble"] == ["dede", "transplant"] and redone["config"]["fusion"] == "mean"
    table = O.read_parquet(O.scores_url(str(out), run["shards"][0]["stem"]))
    assert {c: table.column(c) for c in stored} == stored                      # the images were not scored again
    assert "det_kdist" in table.column_names and "det_kdist_dense" not in table.column_names
    _check_split(out, redone, "det_ensemble")


@pytest.mark.parametrize("case", ["unfinished", "dede", "overwrite"])
def test_redetect_needs_a_finished_run_and_detectors_beside_dede(case, tmp_path, cifar_shard_dir, tiny_decoder,
                                                                capsys):
    extra, want = {"unfinished": ([], "--redetect needs a finished run, and 4 of the 4 shards in"),
                   "dede": (["--detectors", "dede"], "--redetect recomputes the detectors beside dede; for DeDe alone"),
                   "overwrite": (["--overwrite"], "--redetect reuses the run's scores, which --overwrite removes")}[case]
    assert main(_argv(cifar_shard_dir, tiny_decoder, tmp_path / "out", "--redetect", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and want in err[0], err


@pytest.mark.parametrize("case", ["unknown", "flag-by", "fusion", "bank-trim"])
def test_bad_detector_flags_are_one_line(case, tmp_path, cifar_shard_dir, tiny_decoder, capsys):
    extra, want = {"unknown": (["--detectors", "dede,lof"], "--detectors: unknown detector 'lof'; known: dede, dede-rel, dede-region, occlusion, transplant, kdist"),
                   "flag-by": (["--detectors", "kdist", "--flag-by", "slof"], "--flag-by 'slof' is not one of"),
                   "fusion": (["--fusion", "median"], "invalid choice"),
                   "bank-trim": (["--bank-trim", "0.7"], "--bank-trim must be in [0, 0.5), got 0.7")}[case]
    out = tmp_path / "out"
    assert main(_argv(cifar_shard_dir, tiny_decoder, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and want in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("extra,asked", [([], "(transplant, slof:bank, kdist-dense, ensemble) of --detectors ensemble (the default)"),
                                         (["--detectors", "kdist"], "(kdist) of --detectors kdist")])
def test_a_decoder_without_a_clean_reference_is_one_line(extra, asked, tmp_path, cifar_shard_dir, tiny_decoder,
                                                         capsys):
    """A decoder trained before decoders kept reference.safetensors: the default (and any embedding
    detector) is one line naming both ways out; DeDe alone still plans."""
    from pipeline.job.config import JobConfig
    from pipeline.job.run import plan

    old = tmp_path / "old"
    shutil.copytree(tiny_decoder, old)
    cfg = json.loads((old / "config.json").read_text())
    (old / cfg.pop("reference")["file"]).unlink()
    (old / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    assert main(_argv(cifar_shard_dir, str(old), out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("score_corpus: error: decoder ") and asked in err[0], err
    assert "has no clean reference (reference.safetensors)" in err[0], err
    assert err[0].endswith("retrain the decoder with jobs/train_decoder.py, or pass --detectors dede to score with "
                           "DeDe alone"), err
    assert not out.exists()
    p = plan(JobConfig(inputs=[str(cifar_shard_dir)], out=str(out), decoder=str(old), detectors=["dede"]))
    assert p.detectors.flag_by == "dede" and p.clean is None


def _without(tiny_decoder, folder, field):
    """A copy of the tiny decoder in `folder` whose clean reference lacks `field` (written before it existed)."""
    from dataclasses import asdict, replace

    from pipeline.dede.config import load_decoder_config
    from pipeline.dede.reference import load_reference, save_reference

    shutil.copytree(tiny_decoder, folder)
    ref = load_reference(str(folder), load_decoder_config(str(folder)))
    assert getattr(ref, field) is not None and (field == "recipients" or getattr(ref, field).shape == ref.holdout_scores.shape)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["reference"] = asdict(save_reference(str(folder), replace(ref, **{field: None}), cfg["reference"]["max_bank"]))
    (folder / "config.json").write_text(json.dumps(cfg))
    return str(folder)


def test_dede_rel_with_a_reference_written_before_difficulty_is_one_line(tmp_path, cifar_shard_dir, tiny_decoder,
                                                                         capsys):
    """A clean reference without the hold-out's difficulty: dede-rel, and an ensemble with dede-region, is one line
    before Ray starts; the embedding detectors still plan."""
    from pipeline.job.config import JobConfig
    from pipeline.job.run import plan

    old = _without(tiny_decoder, tmp_path / "old", "holdout_difficulty")
    out = tmp_path / "out"
    assert main(_argv(cifar_shard_dir, old, out, "--detectors", "dede-rel,ensemble")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dede-rel needs the hold-out's difficulty" in err[0] and "retrain" in err[0], err
    assert not out.exists()
    assert main(_argv(cifar_shard_dir, old, out, "--ensemble", "dede-region,slof:bank")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dede-region needs the hold-out's difficulty" in err[0] and "--ensemble" in err[0], err
    assert plan(JobConfig(inputs=[str(cifar_shard_dir)], out=str(out), decoder=old,
                          detectors=["kdist", "slof:bank"])).clean is not None


@pytest.mark.parametrize("name,missing", [("occlusion", "holdout_occlusion"), ("transplant", "holdout_transplant"),
                                          ("transplant", "recipients")])
def test_an_image_detector_with_a_reference_written_before_it_is_one_line(name, missing, tmp_path, cifar_shard_dir,
                                                                         tiny_decoder, capsys):
    """A clean reference without an image detector's hold-out scores (or transplant's recipients): --detectors NAME is
    one line before Ray starts; the other detectors still plan."""
    from pipeline.job.config import JobConfig
    from pipeline.job.run import plan

    old = _without(tiny_decoder, tmp_path / "old", missing)
    out = tmp_path / "out"
    assert main(_argv(cifar_shard_dir, old, out, "--detectors", name)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{name} needs the hold-out's {name} scores" in err[0] and "retrain" in err[0], err
    assert not out.exists()
    assert plan(JobConfig(inputs=[str(cifar_shard_dir)], out=str(out), decoder=old,
                          detectors=["dede-rel", "slof:bank"])).clean is not None
