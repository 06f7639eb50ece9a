"""Helpers to compare two runs, to find this session's Ray worker processes, and to run `ray start`
nodes on 127.0.0.1 that `ray job submit` submits to."""
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
RAY_BIN = Path(sys.executable).parent / "ray"
# every port explicit: another Ray on this machine (the session Ray, a colleague's) holds the defaults,
# e.g. the dashboard agent's 52365, and a clash silently disables job submission
NODE_PORT_FLAGS = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                   "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port")


def output_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def assert_same_outputs(a: Path, b: Path) -> None:
    """Same files; same Parquet rows and scores; byte-identical tars; same stats except timings and node."""
    fa, fb = output_files(a), output_files(b)
    assert fa == fb, sorted(set(fa) ^ set(fb))
    for rel in fa:
        if rel.endswith(".parquet"):
            assert pq.read_table(a / rel).equals(pq.read_table(b / rel)), rel
        elif rel.endswith(".tar"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        elif rel.startswith("stats/"):
            sa, sb = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
            for s in (sa, sb):
                s.pop("timings"), s.pop("samples_per_s"), s.pop("node_id")
            assert sa == sb, rel
    ra, rb = json.loads((a / "run.json").read_text()), json.loads((b / "run.json").read_text())
    assert ra["totals"] == rb["totals"] and ra["shards"] == rb["shards"]


def ray_worker_pids(name: str) -> list[int]:
    """PIDs of this session's Ray worker processes whose title contains `name` (children of our raylet)."""
    import ray._private.worker as w  # noqa: I001  (first: puts Ray's bundled psutil on sys.path)
    import psutil

    raylets = w._global_node.all_processes["raylet"]
    pids = []
    for info in raylets:
        for child in psutil.Process(info.process.pid).children(recursive=True):
            try:
                if name in " ".join(child.cmdline()):
                    pids.append(child.pid)
            except psutil.Error:
                pass
    return pids


def wait_for(pred, timeout: float, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise TimeoutError("condition not met in time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    """A running head node: its dashboard (job submission) URL, GCS address and the env to call it with."""

    url: str
    gcs: str
    env: dict[str, str]


def ray_env() -> dict[str, str]:
    """The environment of a private test cluster and of the CLI calls to it."""
    env = {**os.environ, "PATH": f"{RAY_BIN.parent}:{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
           # a private loopback-only test cluster: no token (Ray 2.60 enables token auth for new local
           # clusters, and `ray job submit` then needs the token; that is deployment, not our job)
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return env


@contextmanager
def ray_node(name: str, log: Path, env: dict[str, str], *flags: str) -> Iterator[subprocess.Popen]:
    """`ray start --block FLAGS` on 127.0.0.1 with free ports and its own --temp-dir, in its own process
    group; on exit that node and its process group are stopped (ours only: never `ray stop`, which
    stops every Ray on the machine)."""
    if not RAY_BIN.exists():
        pytest.skip("ray CLI not installed")
    temp = Path("/tmp") / f"ray{name}{os.getpid()}"      # short: unix socket paths are length-limited
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(RAY_BIN), "start", "--block", "--node-ip-address=127.0.0.1", "--num-gpus=0",
                                 f"--temp-dir={temp}", "--disable-usage-stats",
                                 *(f"{k}={free_port()}" for k in NODE_PORT_FLAGS), *flags],
                                env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
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


@contextmanager
def ray_head(tmp_path: Path, num_cpus: int) -> Iterator[RayHead]:
    """A head node with the dashboard (job submission) on, once it answers."""
    port, dash, env = free_port(), free_port(), ray_env()
    log = tmp_path / "head.log"
    with ray_node("jsh", log, env, "--head", f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=true",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                  f"--ray-client-server-port={free_port()}") as proc:
        head = RayHead(f"http://127.0.0.1:{dash}", f"127.0.0.1:{port}", env)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{head.url}/api/version", timeout=2).read()
                break
            except urllib.error.HTTPError:     # answering (e.g. 401 with Ray's token auth): it is up
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("ray head did not start: " + log.read_text()[-2000:])
                time.sleep(1)
        yield head


def alive_nodes(head: RayHead) -> dict[str, bool]:
    """The cluster's alive nodes (Ray's state API on the dashboard): node id -> is the head."""
    with urllib.request.urlopen(f"{head.url}/api/v0/nodes?limit=100", timeout=10) as r:
        nodes = json.load(r)["data"]["result"]["result"]
    return {n["node_id"]: bool(n["is_head_node"]) for n in nodes if n["state"] == "ALIVE"}


@contextmanager
def ray_worker(tmp_path: Path, head: RayHead, num_cpus: int) -> Iterator[None]:
    """A worker node joined to `head`, once the head lists it alive."""
    log = tmp_path / "worker.log"
    before = len(alive_nodes(head))
    with ray_node("jsw", log, head.env, f"--address={head.gcs}", f"--num-cpus={num_cpus}") as proc:
        deadline = time.monotonic() + 120
        while len(alive_nodes(head)) <= before:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ray worker did not join: " + log.read_text()[-2000:])
            time.sleep(1)
        yield


def submit_job(head: RayHead, args: list[str], *options: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """`ray job submit --address HEAD --working-dir REPO OPTIONS -- python jobs/score_corpus.py ARGS`,
    retried while the head's job agent is not up yet."""
    cmd = [str(RAY_BIN), "job", "submit", "--address", head.url, "--working-dir", str(REPO), *options,
           "--", "python", "jobs/score_corpus.py", *args]
    deadline = time.monotonic() + 90
    while True:      # the head answers before its job agent is up: "No available agent ... try again later"
        res = subprocess.run(cmd, cwd=REPO, env=head.env, capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in res.stderr + res.stdout or time.monotonic() > deadline:
            return res
        time.sleep(3)
