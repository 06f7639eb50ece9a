"""The CLIs fail with one clear line on bad input, before starting Ray, and write nothing."""
from __future__ import annotations

import pytest

from jobs.score_corpus import main


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
