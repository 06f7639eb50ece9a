"""The lab report: curve tables at fixed minutes and the generated block of results/encoders.md."""
import json

import pytest

from pipeline.lab.report import BEGIN, END, curve_table, fill


def test_curve_table_reads_the_metric_at_each_mark(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [{"train_minutes": 0.0, "epoch": 0, "knn_ca": 0.25},
                                                   {"train_minutes": 5.01, "epoch": 1.5, "knn_ca": 0.4},
                                                   {"train_minutes": 12.0, "epoch": 3, "knn_ca": 0.5}]))
    lines = curve_table({"w": p}, "knn_ca").splitlines()
    assert lines[0] == "| curve | 0 min | 5 min | 10 min |"
    assert lines[2] == "| w | 25.0 (ep 0) | 40.0 (ep 1.5) | - |"


def test_fill_replaces_only_the_generated_block(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    fill(doc, "new table")
    assert doc.read_text() == f"intro\n{BEGIN}\nnew table\n{END}\noutro\n"
    (tmp_path / "bare.md").write_text("no markers")
    with pytest.raises(ValueError, match="no .* block"):
        fill(tmp_path / "bare.md", "x")
