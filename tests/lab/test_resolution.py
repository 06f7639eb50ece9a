"""The resolution experiment (jobs/lab_resolution.py): disjoint splits, and a tiny end-to-end run whose two
decoders work at 32 and 64 px, whose table is generated from its JSON, and whose rerun recomputes nothing."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from jobs import lab_resolution
from pipeline.lab import resolution
from pipeline.lab.detect_data import tiny_imagenet_path


def test_split_is_disjoint_and_keeps_the_references_class_out_of_the_pools():
    labels = np.arange(3000) % 30
    cfg = resolution.ResolutionConfig(shadow=500, aux=800, pool_half=100, pool_rare=(490, 5))
    idx = resolution.split(labels, cfg)
    every = np.concatenate(list(idx.values()))
    assert len(every) == len(set(every.tolist()))
    assert len(set(labels[idx["refs"]])) == 1 and len(idx["refs"]) == cfg.references
    target = labels[idx["refs"][0]]
    assert all((labels[idx[k]] != target).all() for k in ("aux", "half_clean", "half_triggered", "rare_triggered"))
    with pytest.raises(ValueError, match="asks for"):
        resolution.split(labels, resolution.ResolutionConfig(shadow=500, aux=5000))


def test_the_trigger_is_a_small_square_in_the_corner_of_a_64_px_image():
    x = np.zeros((1, 64, 64, 3), np.uint8)
    y = resolution.ResolutionConfig(patch=4).trigger().apply_uint8(x)
    assert (y[0, 58:62, 58:62] == 255).all() and y.sum() == 4 * 4 * 3 * 255


def test_implant_rate_reads_the_attack_by_rank_so_a_collapse_scores_no_implant():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.90, 0.99, 2000)
    assert resolution.implant_rate(clean, rng.uniform(0.995, 1.0, 500)) == 1.0       # triggered beyond every clean
    assert resolution.implant_rate(clean, rng.uniform(0.90, 0.99, 500)) < 0.05        # triggered like clean
    collapsed = np.full(2000, 0.9998) + rng.normal(0, 1e-5, 2000)                    # every image at the references
    assert resolution.implant_rate(collapsed, np.full(500, 0.9998) + rng.normal(0, 1e-5, 500)) < 0.05


@pytest.mark.slow
@pytest.mark.skipif(not tiny_imagenet_path().exists(), reason="the Tiny-ImageNet archive (../shared/data) is absent")
def test_tiny_run_scores_both_decoder_sizes_and_a_rerun_recomputes_nothing(tiny_simclr, tmp_path, capsys):
    argv = ["--clean", tiny_simclr.split("@", 1)[1], "--scale", "0.01", "--epochs", "1", "--decoder-epochs", "1",
            "--results", str(tmp_path), "--threads", "1", "--no-progress"]
    assert lab_resolution.main(argv) == 0
    res = json.loads((tmp_path / "resolution.json").read_text())
    assert {k: d["image_size"] for k, d in res["decoders"].items()} == {"32": 32, "64": 64}
    assert res["pools"]["0.5"]["counts"]["poisoned"] == res["pools"]["0.5"]["counts"]["clean"] == 10
    assert all(0 <= res["pools"][p][s]["auc"] <= 1 for p in ("0.5", "0.01") for s in ("32", "64"))
    assert (tmp_path / "resolution.md").read_text() == resolution.render(res)
    t0 = time.time()
    assert lab_resolution.main(argv) == 0
    assert time.time() - t0 < 60
    assert json.loads((tmp_path / "resolution.json").read_text())["pools"] == res["pools"]
