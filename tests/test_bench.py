"""bench/throughput.py on a tiny input: both sizes, every figure and ratio in results.json, results.md
generated from it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "coco-mini").exists() or not (SHARED / "cifar10").exists(), reason="needs ../shared/data")
def test_the_benchmark_runs_on_a_tiny_input(tmp_path, capsys):
    from bench.throughput import main, render

    assert main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--tiny", "--threads", "1"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    for name, size in res["sizes"].items():
        for key in ("embed_sps", "compute_sps", "plain_sps", "job_sps", "job_steady_sps", "flops_per_sample"):
            assert size[key] > 0, (name, key)
        assert size["job_over_compute"] == pytest.approx(size["job_sps"] / size["compute_sps"])
        assert size["job_steady_sps"] >= size["job_sps"]                   # the actor's time is within the call's
        assert size["decode_per_core"]["pil_full"] > 0 and size["decode_per_core"]["pil_draft"] > 0
    assert res["sizes"]["224"]["decoder"]["image_size"] == res["sizes"]["224"]["work_size"] == 224
    assert res["sizes"]["224"]["samples"] == 16 and res["sizes"]["32"]["samples"] == 40
    assert res["job_over_plain"] == res["sizes"]["224"]["job_over_plain"]
    assert res["rss"]["shards"] == [1, 4] and all(v > 0 for v in res["rss"]["peak_rss_mb"])
    assert set(res["targets"]) == {"job_over_compute", "job_over_plain", "compute_over_embed", "rss_growth"}
    assert res["projection"]["cc3m_minutes"] > 0 and "not a measurement" in res["projection"]["what"]
    assert (tmp_path / "out" / "results.md").read_text() == render(res)
