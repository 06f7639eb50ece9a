"""`ray job submit` to a two-node cluster (two `ray start` processes on 127.0.0.1, one CPU each) with
`--actors 2`: the scoring actors run on both nodes and every sample is accounted for exactly once
(issue 16, item 5)."""
from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipeline.corpus.reader import iter_shard
from pipeline.job import outputs as O
from pipeline.job.schemas import check_json
from tests.job.recovery_utils import alive_nodes, ray_head, ray_worker, submit_job


@pytest.fixture
def two_nodes(tmp_path):
    """A head and a worker node of one CPU each: two one-CPU actors need one node each."""
    with ray_head(tmp_path, num_cpus=1) as head, ray_worker(tmp_path, head, num_cpus=1):
        yield head


def _keys(url: str) -> list[str]:
    return [s.key for s in iter_shard(url)]


@pytest.mark.slow
def test_two_nodes(two_nodes, tmp_path, cifar_shard_dir, cifar_test_samples, tiny_decoder):
    out = tmp_path / "out"
    # `--detectors dede`: the scoring actors write the stats themselves, so their node_id is the scoring
    # node. Ray Data hands shards to whichever actor is up first; waiting for the whole pool makes both work.
    env = {"env_vars": {"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300"}}
    res = submit_job(two_nodes, ["--input", f"{cifar_shard_dir}/{{000000..000003}}.tar", "--decoder", tiny_decoder,
                                 "--out", str(out), "--actors", "2", "--batch-size", "20", "--detectors", "dede",
                                 "--no-progress", "--no-report"],
                     "--runtime-env-json", json.dumps(env))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    nodes = alive_nodes(two_nodes)
    assert sorted(nodes.values()) == [False, True], nodes
    run = json.loads((out / "run.json").read_text())
    stems = [s["stem"] for s in run["shards"]]
    assert stems == [f"{i:06d}" for i in range(4)]
    stats = [O.read_json(O.stats_url(str(out), stem)) for stem in stems]
    assert {s["node_id"] for s in stats} == set(nodes), (stats, nodes)      # (a) scored on both nodes

    expected = Counter(k for k, _ in cifar_test_samples[:160])                  # (b) every sample once
    scores = pq.read_table(out / "scores", columns=["key"])
    assert Counter(scores.column("key").to_pylist()) == expected and len(expected) == 160
    clean = [k for stem in stems for k in _keys(O.clean_url(str(out), stem))]
    quarantine = [k for stem in stems for k in _keys(O.quarantine_url(str(out), stem))]
    assert Counter(clean) + Counter(quarantine) == expected
    t = run["totals"]
    assert t["read"] == 160 == t["kept"] + t["flagged"] + t["errored"]
    assert (len(clean), len(quarantine)) == (t["kept"], t["flagged"] + t["errored"])
    for s in stats:
        check_json(s, "stats.schema.json")
        assert s["read"] == s["kept"] + s["flagged"] + s["errored"]
