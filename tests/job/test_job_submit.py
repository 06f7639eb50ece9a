"""`ray job submit --working-dir . -- python jobs/score_corpus.py ...` against `ray start --head` on
127.0.0.1 (its own Ray, stopped by process group; never `ray stop`, which would stop every Ray here)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("ray CLI not installed")
    port, dash = _free_port(), _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "RAY_USAGE_STATS_ENABLED": "0",
           # a private loopback-only test cluster: no token (Ray 2.60 enables token auth for new local
           # clusters, and `ray job submit` then needs the token; that is deployment, not our job)
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    temp = Path("/tmp") / f"rayjs{os.getpid()}"            # short: unix socket paths are length-limited
    # every port explicit: another Ray on this machine (the session Ray, a colleague's) holds the defaults,
    # e.g. the dashboard agent's 52365, and a clash silently disables job submission
    ports = {flag: _free_port() for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                             "--metrics-export-port", "--runtime-env-agent-port",
                                             "--ray-client-server-port", "--node-manager-port",
                                             "--object-manager-port")}
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--num-gpus=0",
                             "--include-dashboard=true", f"--temp-dir={temp}", "--disable-usage-stats",
                             *(f"{k}={v}" for k, v in ports.items())],
                            env=env, start_new_session=True, stdout=open(tmp_path / "head.log", "wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2).read()
                break
            except urllib.error.HTTPError:     # answering (e.g. 401 with Ray's token auth): it is up
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("ray head did not start: " + (tmp_path / "head.log").read_text()[-2000:])
                time.sleep(1)
        yield url, env
    finally:
        proc.send_signal(signal.SIGTERM)                    # `ray start --block` tears its node down
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:                                                 # then its whole process group: ours only
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit(head, tmp_path, cifar_shard_dir, tiny_decoder):
    url, env = head
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO),
           "--", "python", "jobs/score_corpus.py", "--input", f"{cifar_shard_dir}/{{000000..000003}}.tar",
           "--decoder", tiny_decoder, "--out", str(out), "--batch-size", "20", "--no-progress"]
    deadline = time.monotonic() + 90
    while True:      # the head answers before its job agent is up: "No available agent ... try again later"
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        if "No available agent" not in res.stderr + res.stdout or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "samples/s" in res.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["totals"]["read"] == 160 and run["totals"]["shards"] == 4
    assert sorted(p.name for p in (out / "stats").iterdir()) == [f"{i:06d}.json" for i in range(4)]
