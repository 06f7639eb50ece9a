"""Helpers to compare two runs and to find this session's Ray worker processes."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq


def output_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def assert_same_outputs(a: Path, b: Path) -> None:
    """Same files; same Parquet rows and scores; byte-identical tars; same stats except timings."""
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
                s.pop("timings"), s.pop("samples_per_s")
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
