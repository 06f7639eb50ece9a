"""The ensemble member search ranks member sets by their fused TPR at 1% FPR or AUC on the validation pools' cached
runs."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.detect.spec import column
from pipeline.errors import BadInput
from pipeline.lab import fusion


def _run(folder, n_clean: int, n_poisoned: int, informative: set[str], seed: int,
         shifts: dict[str, np.ndarray] | None = None) -> None:
    """A fake score run: `informative` detectors score poisoned rows higher, the others are noise; `shifts` gives
    a detector its own shift per poisoned row instead."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_clean, bool), np.ones(n_poisoned, bool)]
    cols = {"status": ["ok"] * len(y), "poisoned": y.tolist()}
    for name in fusion.CANDIDATES:
        shift = (shifts or {}).get(name, np.full(n_poisoned, 3.0 if name in informative else 0.0))
        cols[column(name)] = rng.normal(size=len(y)) + np.r_[np.zeros(n_clean), shift]
    (folder / "scores").mkdir(parents=True)
    pq.write_table(pa.table(cols), folder / "scores" / "000000.parquet")
    (folder / "run.json").write_text("{}")


def test_search_ranks_on_the_validation_pools_and_only_reports_the_test_pools_and_extra_runs(tiny_cache, tmp_path):
    detect = tiny_cache / "detect"
    good = {"dede", "norm:bank"}
    _run(detect / "score-v50", 200, 200, good, 0)
    _run(detect / "score-v01", 990, 10, good, 1)
    _run(detect / "score-p50", 200, 200, {"kdist"}, 3)       # the test pools favour another set: never ranked on
    _run(detect / "score-p01", 990, 10, {"kdist"}, 4)
    _run(tmp_path / "demo", 990, 10, {"dede"}, 2)
    runs = {"val-0.5": {"run": "score-v50"}, "val-0.01": {"run": "score-v01"}, "0.5": {"run": "score-p50"},
            "0.01": {"run": "score-p01"}}
    results = {"attacks": {"a": {"runs": {"id": runs}}}}
    out = fusion.search(results, {"demo": tmp_path / "demo"}, size=2, keep=5)
    assert out["rank_by"] == "tpr" and out["tpr_cells"] == ["a@val-0.01"]
    best = out["sets"][0]
    assert best["members"] == ["dede", "norm:bank"] and best["rank"] == 1
    assert best["validation_mean"] > 0.99 and best["test_mean"] < 0.7
    assert set(best["auc"]) == {"a@val-0.5", "a@val-0.01", "a@0.5", "a@0.01", "demo"}
    assert out["cells"] == ["a@val-0.5", "a@val-0.01"] and out["test_cells"] == ["a@0.5", "a@0.01"]
    assert out["searched"] == 17 + 3 * 136                 # 17 candidates alone; pairs by max, mean and fisher
    noise, _ = fusion.fused_metrics(fusion.cell_tables(results, {})["a@val-0.5"], ("kdist",), "mean")
    assert 0.4 < noise < 0.6
    fusion.write(tmp_path, {**out, "command": "c", "commit": "x"})
    md = (tmp_path / "fusion.md").read_text()
    assert md == fusion.render(json.loads((tmp_path / "fusion.json").read_text()))
    assert "| 1 | dede + norm:bank |" in md and f"/ {100 * best['tpr']['a@val-0.01']:.0f}% |" in md
    marked = fusion.render({**out, "default": {"members": ["dede", "norm:bank"], "fusion": best["fusion"]}})
    assert f"| 1 | dede + norm:bank (default) | {best['fusion']} |" in marked and marked.count("(default)") == 1


def test_search_without_validation_runs_is_a_one_line_error(tiny_cache):
    _run(tiny_cache / "detect" / "score-p01", 990, 10, {"dede"}, 1)
    results = {"attacks": {"a": {"runs": {"id": {"0.01": {"run": "score-p01"}}}}}}
    with pytest.raises(BadInput, match="--pools val-0.5 val-0.01"):
        fusion.search(results, {})


def test_other_victims_validation_pools_join_the_ranking_and_their_test_pools_the_report(tiny_cache, tmp_path, capsys):
    from jobs import lab_fusion

    detect = tiny_cache / "detect"
    for name, good in (("a", {"dede"}), ("b", {"kdist"})):         # each victim favours another detector
        for pool, n in (("val-0.5", (200, 200)), ("val-0.01", (990, 10)), ("0.01", (990, 10))):
            _run(detect / f"score-{name}{pool}", *n, good, len(pool) + ord(name))
    runs = {name: {p: {"run": f"score-{name}{p}"} for p in ("val-0.5", "val-0.01", "0.01")} for name in "ab"}
    main, other = tmp_path / "results", tmp_path / "blend"
    for folder, name in ((main, "a"), (other, "b")):
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"attacks": {"x": {"runs": {"id": runs[name]}}}}))
    alone = fusion.search(json.loads((main / "results.json").read_text()), {}, size=2, keep=5)
    assert alone["sets"][0]["members"] == ["dede"]
    assert lab_fusion.main(["--results", str(main), "--also", str(other), "--max-size", "2", "--no-progress"]) == 0
    out = json.loads((main / "fusion.json").read_text())
    assert out["cells"] == ["x@val-0.5", "x@val-0.01", "blend/x@val-0.5", "blend/x@val-0.01"]
    assert out["test_cells"] == ["x@0.01", "blend/x@0.01"]
    assert set(out["sets"][0]["members"]) == {"dede", "kdist"}     # only the pair serves both victims
    capsys.readouterr()
    assert lab_fusion.main(["--results", str(main), "--also", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "--also" in capsys.readouterr().err


def test_the_tpr_rule_prefers_the_set_that_catches_more_at_1pct_fpr_where_the_auc_rule_prefers_another(tiny_cache):
    """`dede` lifts every poisoned row a little (the higher AUC), `kdist` half of them far and the rest not at all
    (the higher TPR at 1% FPR): each rule ranks its own first."""
    rng = np.random.default_rng(7)
    runs = {}
    for pool, seed in (("val-0.5", 0), ("val-0.01", 1)):
        n = 400
        shifts = {"dede": np.full(n, 1.8), "kdist": np.where(rng.random(n) < 0.5, 8.0, 0.0)}
        _run(tiny_cache / "detect" / f"score-{pool}", 4000, n, set(), seed, shifts)
        runs[pool] = {"run": f"score-{pool}"}
    results = {"attacks": {"a": {"runs": {"id": runs}}}}
    by_tpr = fusion.search(results, {}, size=1, keep=3)["sets"][0]
    by_auc = fusion.search(results, {}, size=1, keep=3, rank_by="auc")["sets"][0]
    assert by_tpr["members"] == ["kdist"] and by_auc["members"] == ["dede"]
    assert by_tpr["validation_tpr"] > 0.45 > by_auc["validation_tpr"]
    assert by_auc["validation_mean"] > 0.85 > by_tpr["validation_mean"]
    with pytest.raises(BadInput, match="rank_by"):
        fusion.search(results, {}, rank_by="f1")
