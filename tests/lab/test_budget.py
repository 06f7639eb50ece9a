"""The lab's time-budgeted loop: epoch and time stops, monitor points, schedule progress."""
import json
import time

from pipeline.lab.budget import TimedLoop


def test_runs_all_epochs_and_monitors_start_and_end(tmp_path):
    calls = []
    loop = TimedLoop(10, 3, 2, max_minutes=60, monitor_every_minutes=60,
                     monitor=lambda: calls.append(1) or {"m": 0.5}, desc="t", curve_path=tmp_path / "c.jsonl")
    batches = [b.tolist() for b in loop]
    assert len(batches) == 6 and all(len(b) == 3 for b in batches)      # 10 // 3 = 3 steps per epoch
    assert sorted(sum(batches[:3], [])) == sorted(set(sum(batches[:3], [])))   # no repeats within an epoch
    assert len(calls) == 2 and loop.progress == 1.0 and loop.cosine() == 0.0
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0.0, 2.0] and rows[-1]["m"] == 0.5


def test_stops_on_the_time_budget_and_decays_by_time():
    loop = TimedLoop(1000, 10, 100, max_minutes=0.3 / 60, monitor_every_minutes=0.1 / 60,
                     monitor=lambda: {}, desc="t")
    seen = []
    for _ in loop:
        seen.append(loop.progress)
        time.sleep(0.05)
    assert 0.3 <= loop.minutes * 60 < 0.5 and loop.steps < 20
    assert seen == sorted(seen) and loop.progress == 1.0
    assert len(loop.curve) >= 3                                          # start, every 0.1 s, end
