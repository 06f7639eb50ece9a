"""The job survives every kind of bad input and accounts for every sample (issue 3, 'Done when' 1)."""
from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

from pipeline.corpus.reader import iter_shard, unsafe_name
from pipeline.job import outputs as O
from pipeline.job.config import JobConfig
from pipeline.job.run import run_job
from pipeline.job.schemas import check_json, check_parquet
from tests.job.faults import build_fault_corpus


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory, cifar_test_samples, tiny_decoder, ray_session):
    root = tmp_path_factory.mktemp("faulty")
    expect = build_fault_corpus(root / "in", cifar_test_samples[:20])
    out = str(root / "out")
    cfg = JobConfig(inputs=[str(root / "in")], out=out, decoder=tiny_decoder, batch_size=8, actors=1,
                    carry_fields=["label", "poisoned"], store_embeddings=True, progress=False)
    run = run_job(cfg)
    return root, out, run, expect


def test_every_sample_accounted_for(fault_run):
    root, out, run, expect = fault_run
    stems = sorted(s["stem"] for s in run["shards"])
    assert stems == ["empty/000000", "faults/000000", "notatar/000000", "truncated/000000", "zero/000000"]
    for stem in stems:
        stats = O.read_json(O.stats_url(out, stem))
        check_json(stats, "stats.schema.json")
        t = O.read_parquet(O.scores_url(out, stem))
        check_parquet(t)
        assert stats["read"] == t.num_rows == stats["kept"] + stats["flagged"] + stats["errored"] >= 1
        err = t.filter(pc.equal(t.column("status"), "error"))
        assert err.num_rows == stats["errored"]
        for row in err.to_pylist():   # every error names its shard, key and reason
            assert row["shard"].endswith(stem + ".tar") and row["key"] and ":" in row["error"]
        # clean + quarantine hold every sample exactly once, in order
        clean = list(iter_shard(O.clean_url(out, stem)))
        quar = list(iter_shard(O.quarantine_url(out, stem)))
        assert all(s.error is None for s in clean + quar), [s.error for s in clean + quar if s.error]
        assert len(clean) == stats["kept"] and len(quar) == stats["flagged"] + stats["errored"]
        kept_keys = t.filter(pc.invert(pc.or_(t.column("flagged"),
                                                               pc.equal(t.column("status"), "error"))))
        assert [s.key for s in clean] == kept_keys.column("key").to_pylist()
        for s in quar:
            assert not any(unsafe_name(n) for n, _ in s.members)
            reason = json.loads(s.fields[O.REASON_SUFFIX])
            check_json(reason, "reason.schema.json")
    check_json(run, "run.schema.json")
    assert run["flag_by"] == "ensemble"                      # the default: DeDe and the ensemble, every shard
    tot = run["totals"]
    assert tot["read"] == tot["kept"] + tot["flagged"] + tot["errored"]


def test_fault_kinds_and_exotic_images(fault_run):
    root, out, run, expect = fault_run
    t = O.read_parquet(O.scores_url(out, "faults/000000")).to_pylist()
    by_key = {}
    for r in t:
        by_key.setdefault(r["key"], []).append(r)
    for key, kind in expect["errors"].items():
        k, n = (key.split("#")[0], int(key.split("#")[1]) - 1) if "#" in key else (key, 0)
        row = by_key[k][n]
        assert row["status"] == "error" and row["error"].startswith(kind + ":"), (key, row["error"])
    assert by_key["dup"][0]["status"] == "ok"
    for key in ("png", "webp", "gray", "palette", "rgba", "cmyk", "sixteen", "exif", "badcaption", "good0", "last"):
        assert by_key[key][0]["status"] == "ok", (key, by_key[key][0]["error"])
        assert by_key[key][0]["score"] > 0 and len(by_key[key][0]["embedding"]) > 0
    assert "\ufffd" in by_key["badcaption"][0]["caption"]
    assert by_key["badcaption"][0]["label"] is None            # unparsable .json -> carried fields null
    assert [by_key[f"good{i}"][0]["label"] for i in range(4)] == [0, 1, 2, 3]
    assert by_key["good3"][0]["poisoned"] is True
    assert by_key["corrupt"][0]["embedding"] is None
    # shard-level records
    for stem, kind in (("truncated/000000", "tar"), ("empty/000000", "empty"), ("notatar/000000", "tar"),
                       ("zero/000000", "tar")):
        rows = O.read_parquet(O.scores_url(out, stem)).to_pylist()
        assert rows[-1]["key"] == "__tar__" and rows[-1]["error"].startswith(kind + ":"), rows[-1]
    trunc = O.read_parquet(O.scores_url(out, "truncated/000000")).to_pylist()
    assert sum(r["status"] == "ok" for r in trunc) >= 3


def test_clean_bytes_identical_and_quarantine_renamed_safely(fault_run):
    root, out, run, expect = fault_run
    src = {s.key: s.members for s in iter_shard(str(root / "in" / "faults" / "000000.tar"))}
    for s in iter_shard(O.clean_url(out, "faults/000000")):
        assert s.members == src[s.key]        # every member's original name and bytes
    quar = list(iter_shard(O.quarantine_url(out, "faults/000000")))
    reasons = [json.loads(s.fields[O.REASON_SUFFIX]) for s in quar]
    renamed = [r for r in reasons if "renamed_from" in r]
    originals = sorted(n for r in renamed for n in r["renamed_from"].values())
    assert {"../escape.jpg", "../escape.txt", "/abs/path.jpg"} <= set(originals)
    # renamed samples keep their bytes
    esc = next(s for s, r in zip(quar, reasons) if r["key"] == "../escape")
    assert dict(esc.members)[[n for n, o in json.loads(esc.fields[O.REASON_SUFFIX])["renamed_from"].items()
                              if o == "../escape.txt"][0]] == b"evil"
    names = [n for s in quar for n, _ in s.members]
    assert not any(unsafe_name(n) for n in names)
    keys = [s.key for s in quar]
    assert len(keys) == len(set(keys))
