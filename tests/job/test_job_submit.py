"""`ray job submit --working-dir . -- python jobs/score_corpus.py ...` against `ray start --head` on
127.0.0.1 (its own Ray, stopped by process group; never `ray stop`, which would stop every Ray here)."""
from __future__ import annotations

import json

from tests.job.recovery_utils import submit_job


def test_ray_job_submit(head, tmp_path, cifar_shard_dir, tiny_decoder):
    out = tmp_path / "out"
    res = submit_job(head, ["--input", f"{cifar_shard_dir}/{{000000..000003}}.tar", "--decoder", tiny_decoder,
                            "--out", str(out), "--batch-size", "20", "--no-progress"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "samples/s" in res.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["totals"]["read"] == 160 and run["totals"]["shards"] == 4
    assert sorted(p.name for p in (out / "stats").iterdir()) == [f"{i:06d}.json" for i in range(4)]
