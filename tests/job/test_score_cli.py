"""The CLIs fail with one clear line on bad input, before starting Ray, and write nothing."""
from __future__ import annotations

import pytest

from jobs.score_corpus import main
from pipeline.job.config import JobConfig
from pipeline.job.run import plan


@pytest.mark.parametrize("case", ["decoder", "shards", "policy", "fpr", "pipe", "carry"])
def test_bad_input_is_one_line(case, tmp_path, cifar_shard_dir, tiny_decoder, capsys):
    args = {"decoder": tiny_decoder, "input": str(cifar_shard_dir), "threshold": "fpr:0.01", "carry": ""}
    want = {"decoder": "no decoder at", "shards": "no shard at", "policy": "is not a known policy",
            "fpr": "strictly between 0 and 1", "pipe": "pipe:", "carry": "collide"}[case]
    if case == "decoder":
        args["decoder"] = str(tmp_path / "nope")
    elif case == "shards":
        args["input"] = str(tmp_path / "missing" / "{000..003}.tar")
    elif case == "policy":
        args["threshold"] = "banana"
    elif case == "fpr":
        args["threshold"] = "fpr:2"
    elif case == "pipe":
        args["input"] = "pipe:curl http://x/a.tar"
    elif case == "carry":
        args["carry"] = "score,label"
    out = tmp_path / "out"
    argv = ["--input", args["input"], "--decoder", args["decoder"], "--out", str(out), "--threshold", args["threshold"]]
    if args["carry"]:
        argv += ["--carry-fields", args["carry"]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("score_corpus: error:") and want in err[0], err
    assert not out.exists()


def test_outputs_inside_the_input_folder_are_never_read_as_inputs(tmp_path, cifar_shard_dir, tiny_decoder):
    import shutil

    from pipeline.corpus.writer import write_tar
    from pipeline.job.config import JobConfig
    from pipeline.job.run import plan

    shutil.copytree(cifar_shard_dir, tmp_path / "data")
    write_tar(str(tmp_path / "data" / "run" / "clean" / "000000.tar"), [("k.txt", b"x")])
    p = plan(JobConfig(inputs=[str(tmp_path / "data")], out=str(tmp_path / "data" / "run"), decoder=tiny_decoder))
    assert p.stems == ["000000", "000001", "000002", "000003"]
    assert all("/run/" not in u for u in p.urls)


def _config(*extra):
    from jobs.score_corpus import build_parser, config

    return config(build_parser().parse_args(["--input", "in", "--decoder", "dec", "--out", "out", *extra]))


def test_the_default_flags_by_the_ensemble_and_dede_alone_by_dede():
    from pipeline.detect.spec import DEFAULT_ENSEMBLE

    cfg = _config()
    assert cfg.detectors == ["ensemble"] and cfg.flag_by is None
    plan = cfg.detector_plan()
    assert plan.names == tuple(dict.fromkeys(("dede", *DEFAULT_ENSEMBLE, "ensemble"))) and plan.flag_by == "ensemble"
    assert cfg.to_dict()["flag_by"] == "ensemble"                         # run.json records the resolved one
    dede = _config("--detectors", "dede")
    assert dede.detector_plan().names == ("dede",) and dede.detector_plan().flag_by == "dede"
    assert dede.to_dict()["flag_by"] == "dede"
    assert _config("--flag-by", "dede").detector_plan().flag_by == "dede"
    assert _config("--detectors", "dede,kdist").detector_plan().flag_by == "dede"


@pytest.mark.parametrize("extra,want", [([], "the default --flag-by is ensemble; add --flag-by dede (or --detectors "
                                             "dede)"),
                                        (["--flag-by", "ensemble"], "not --flag-by ensemble; use --flag-by dede")])
def test_paper_with_the_ensemble_is_one_line_naming_the_fix(extra, want, tmp_path, cifar_shard_dir, tiny_decoder,
                                                            capsys):
    out = tmp_path / "out"
    argv = ["--input", str(cifar_shard_dir), "--decoder", tiny_decoder, "--out", str(out), "--threshold", "paper"]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("score_corpus: error: --threshold paper exists only for dede")
    assert want in err[0], err
    assert not out.exists()
    p = plan(JobConfig(inputs=[str(cifar_shard_dir)], out=str(out), decoder=tiny_decoder, threshold="paper",
                       detectors=["dede"]))
    assert p.detectors.flag_by == "dede" and p.threshold is not None and p.clean is None
