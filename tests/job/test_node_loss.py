"""A node of a two-node Ray cluster is removed mid-run; the job completes with every sample and the
same outputs as an uninterrupted run (issue 3, 'Done when' 2)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.job.recovery_utils import assert_same_outputs

REPO = Path(__file__).resolve().parents[2]


def test_node_removed_mid_run(tmp_path, cifar_test_samples, tiny_decoder):
    from pipeline.corpus.ingest import write_shards

    write_shards(iter(cifar_test_samples[:240]), str(tmp_path / "in"), shard_size=30)
    out, ref = tmp_path / "out", tmp_path / "ref"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("node_loss_script.py")), str(tmp_path / "in"),
                             tiny_decoder, str(out), str(ref)], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        raise AssertionError("node-loss run timed out:\n" + log[-4000:])
    lines = [ln for ln in log.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, log[-4000:]
    res = json.loads(lines[-1][len("RESULT "):])
    assert not res["errors"] and not res["alive"], res
    assert 1 <= res["removed_at"] < 8, "the node was not removed mid-run"
    assert res["totals"]["read"] == 240 and res["totals"]["shards"] == 8 and res["flag_by"] == "ensemble"
    assert_same_outputs(out, ref)
