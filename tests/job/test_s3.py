"""Reading shards from and writing every output to S3 (moto's standalone server on 127.0.0.1)."""
from __future__ import annotations

import pytest

from pipeline.job import outputs as O
from pipeline.job.apply import apply_threshold
from pipeline.job.config import JobConfig
from pipeline.job.run import run_job
from pipeline.job.schemas import check_json, check_parquet


@pytest.fixture
def s3(monkeypatch):
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")   # forwarded to the actors by the job
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3")
    fs.mkdir("corpus")
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_s3_in_and_out(s3, cifar_test_samples, tiny_decoder, ray_session):
    from pipeline.corpus.ingest import write_shards

    urls = write_shards(iter(cifar_test_samples[:60]), "s3://corpus/shards/part-a", shard_size=30)
    assert urls == ["s3://corpus/shards/part-a/000000.tar", "s3://corpus/shards/part-a/000001.tar"]
    out = "s3://corpus/runs/r1"
    cfg = JobConfig(inputs=["s3://corpus/shards/part-a/{000000..000001}.tar"], out=out, decoder=tiny_decoder,
                    batch_size=16, actors=1, progress=False, carry_fields=["label"])
    run = run_job(cfg)
    assert run["totals"]["read"] == 60 and run["totals"]["errored"] == 0 and run["flag_by"] == "ensemble"
    s3.invalidate_cache()
    found = sorted(p.split("runs/r1/", 1)[1] for p in s3.find("corpus/runs/r1"))
    assert found == [".dede-run", "clean/000000.tar", "clean/000001.tar", "quarantine/000000.tar", "quarantine/000001.tar",
                     "report/flagged.parquet", "report/keep.parquet", "report/report.html", "report/summary.json",
                     "run.json", "scores/000000.parquet", "scores/000001.parquet", "stats/000000.json",
                     "stats/000001.json"]
    check_json(O.read_json(O.run_url(out)), "run.schema.json")
    for stem in ("000000", "000001"):
        t = O.read_parquet(O.scores_url(out, stem))
        check_parquet(t)
        assert t.num_rows == 30 and t.column("shard")[0].as_py() == f"s3://corpus/shards/part-a/{stem}.tar"
        check_json(O.read_json(O.stats_url(out, stem)), "stats.schema.json")
    # resume on S3: nothing left to do
    assert run_job(cfg)["timing"]["samples_this_run"] == 0
    # re-split on S3 from the stored scores
    new = apply_threshold(out, "0", log=lambda *a: None)
    assert new["totals"]["flagged"] == 60
