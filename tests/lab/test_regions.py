"""The region-count check (jobs/lab_regions.py): it ranks counts on the validation cells only, finds that regions help
where the triggered rows sit in an easy region, and its table is generated from its JSON."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.dede.reference import CleanReference
from pipeline.errors import BadInput
from pipeline.lab import regions

CENTRES = np.eye(8)[:4] * 5.0
EASE = np.array([0.0, 0.0, 0.0, -1.2])          # region 3 reconstructs 3.3x better than the others


def _rows(rng, n, region=None, boost=0.0):
    r = rng.integers(0, 4, n) if region is None else np.full(n, region)
    d = np.exp(rng.uniform(2, 6, n))
    return CENTRES[r] + rng.normal(0, 0.3, (n, 8)), d * np.exp(EASE[r] + boost + rng.normal(0, 0.2, n)), d


def _pool(rng, clean, triggered):
    (x, s, d), (tx, ts, td) = _rows(rng, clean), _rows(rng, triggered, region=3, boost=0.8)
    return {"status": np.array(["ok"] * (clean + triggered)), "poisoned": np.r_[np.zeros(clean), np.ones(triggered)],
            "embedding": np.r_[x, tx], "score": np.r_[s, ts], "difficulty": np.r_[d, td]}


@pytest.fixture
def cached(monkeypatch):
    rng = np.random.default_rng(0)
    hx, hs, hd = _rows(rng, 2000)
    ref = CleanReference(hs, hx, _rows(rng, 1000)[0], hd)
    tables = {f"run-{p}": _pool(rng, 1000, n) for p, n in (("val-0.5", 1000), ("val-0.01", 30), ("0.5", 1000))}
    monkeypatch.setattr(regions, "detect_cache", lambda: Path("/cache"))
    monkeypatch.setattr(regions, "load_decoder_config", lambda folder: None)
    monkeypatch.setattr(regions, "load_reference", lambda folder, config: ref)
    monkeypatch.setattr(regions, "read_scores", lambda run_dir, cols: tables[Path(run_dir).name])
    return {"attacks": {"badclip": {"decoders": {"id": {"folder": "decoder-x"}},
                                    "runs": {"id": {p: {"run": f"run-{p}"} for p in ("val-0.5", "val-0.01", "0.5")}}}}}


def test_counts_are_ranked_on_validation_and_regions_beat_one_median_where_the_trigger_sits_in_an_easy_region(cached):
    res = regions.measure(cached, counts=(1, 4))
    assert {c["split"] for c in res["cells"].values()} == {"validation", "test"}
    assert res["cells"]["badclip@0.5"]["split"] == "test"
    s = res["summary"]
    assert s["4"]["validation_mean"] > 0.99 > 0.85 > s["1"]["validation_mean"], s
    assert res["best"] == 4
    res.update(command="jobs/lab_regions.py", commit="abc", finished="now")
    md = regions.render(res)
    assert "| 4 | " in md and "| badclip@val-0.01 | validation |" in md and "do not edit" in md


def test_no_validation_runs_is_one_line(cached):
    del cached["attacks"]["badclip"]["runs"]["id"]["val-0.5"], cached["attacks"]["badclip"]["runs"]["id"]["val-0.01"]
    with pytest.raises(BadInput, match="no validation runs"):
        regions.measure(cached, counts=(1, 2))
