"""What score_corpus shows: one bar at a terminal, a few log lines elsewhere, none of Ray's own
console output, and the verdict and the report's path last."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.job import console

REPO = Path(__file__).resolve().parents[2]
TABLE_ROW = re.compile(r"^(shards|samples|kept|flagged|errors|samples/s) {2,}|^  \S+ +\d+$")   # O.summary_table


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def rows(n: int, flagged: int = 2, read: int = 100):
    return [{"stem": f"{i:06d}", "read": read, "flagged": flagged, "failed": ""} for i in range(n)]


def fed(shards: list[dict], clock: Clock, step_s: float):
    """The rows one by one, `step_s` seconds apart on `clock` (a stand-in for ds.iter_rows())."""
    for r in shards:
        clock.t += step_s
        yield r


def test_one_bar_counts_shards_samples_and_flagged():
    out, clock = io.StringIO(), Clock()
    got = console.collect(fed(rows(4), clock, 2.0), 4, "scoring", bar=True, flagged=True, clock=clock, file=out,
                             bar_delay=0)
    assert [r["stem"] for r in got] == ["000000", "000001", "000002", "000003"]
    last = out.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "scoring" in last and "4/4" in last and "8 flagged" in last and "samples/s" in last, last


def test_the_bar_leaves_flagged_out_before_shards_are_routed():
    out, clock = io.StringIO(), Clock()
    console.collect(fed(rows(2), clock, 1.0), 2, "scoring", bar=True, flagged=False, clock=clock, file=out,
                    bar_delay=0)
    assert "flagged" not in out.getvalue() and "2/2" in out.getvalue()


@pytest.mark.parametrize("step_s,want", [(1.0, [30, 60, 90]),           # fast: every 30 s
                                         (10.0, list(range(10, 100, 10))),  # slow: every 10% of the shards
                                         (0.1, [])])                     # all within 30 s: the last line only
def test_without_a_bar_a_line_every_tenth_or_30s_whichever_is_rarer(step_s, want):
    lines, clock = [], Clock()
    progress = console.Progress(100, "scoring", bar=False, flagged=True, log=lines.append, clock=clock)
    for r in fed(rows(100, flagged=1), clock, step_s):
        progress.add(r)
    progress.close()
    assert [int(re.search(r"scoring (\d+)/100", ln).group(1)) for ln in lines[:-1]] == want, lines
    assert all("ETA" in ln and "samples/s" in ln for ln in lines[:-1])
    assert lines[-1].startswith("score_corpus: scoring done: 100/100 shards, 10000 samples in ")
    assert lines[-1].endswith(", 100 flagged")


def test_a_failed_stage_logs_no_done_line_and_the_error_goes_through():
    lines, clock = [], Clock()

    def broken():
        yield from fed(rows(1), clock, 1.0)
        raise RuntimeError("actor died")

    with pytest.raises(RuntimeError, match="actor died"):
        console.collect(broken(), 3, "scoring", bar=False, flagged=True, log=lines.append, clock=clock)
    assert lines == []


def test_failed_shards_are_counted():
    lines, clock = [], Clock()
    shards = rows(2) + [{"stem": "x", "read": 0, "flagged": 0, "failed": "gave up after 3 attempts: boom"}]
    console.collect(fed(shards, clock, 1.0), 3, "splitting", bar=False, flagged=True, log=lines.append, clock=clock)
    assert lines == ["score_corpus: splitting done: 3/3 shards, 200 samples in 0:03, 4 flagged, 1 failed"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_only_for_a_person_at_a_terminal(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert console.interactive(True, None, Tty())
    assert not console.interactive(True, None, io.StringIO())          # stderr piped or a file
    assert not console.interactive(False, None, Tty())                 # --no-progress
    assert not console.interactive(True, "10.0.0.1:6379", Tty())       # --ray-address
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")         # ray job submit
    assert not console.interactive(True, None, Tty())


def test_the_job_without_a_tty_prints_a_few_lines_and_ends_with_verdict_and_report(tmp_path, small_shards,
                                                                                   tiny_decoder):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_DATA_DISABLE_PROGRESS_BARS", "RAY_DATA_LOGGING_CONFIG", "RAY_AUTH_MODE")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "score_corpus.py"), "--input", str(Path(small_shards[0]).parent),
         "--decoder", tiny_decoder, "--out", str(out), "--batch-size", "20"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600)
    text = proc.stdout
    assert proc.returncode == 0, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len([ln for ln in lines if not TABLE_ROW.search(ln)]) <= 15, text
    for noise in ("Running Dataset", "Starting execution", "Execution plan", "execution finished",
                  "Progress bars disabled", "Token authentication", "RAY_AUTH_MODE", "token-auth", "\r"):
        assert noise not in text, (noise, text)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert lines[-2:] == [summary["verdict"]["line"], f"report: {out}/report/report.html"], text
    assert any(ln.startswith("score_corpus: scoring done: 3/3 shards, 120 samples in ") for ln in lines), text
