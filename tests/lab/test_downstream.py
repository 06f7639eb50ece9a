"""pipeline.lab.downstream (issue 13 item 9): the probe's CA / ASR arithmetic with and without a detector's
filtering on synthetic features, the downstream test pool's plan, and one tiny end-to-end run of
jobs/lab_detect.py --pools downstream."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch

from pipeline.lab import detect_report
from pipeline.lab.cache import cached
from pipeline.lab.detect_data import DOWNSTREAM_POOL, pool_plan
from pipeline.lab.downstream import NONE, Split, downstream
from pipeline.lab.encoders import SIMCLR_ENCODER
from pipeline.lab.simclr import SimCLRNet
from pipeline.lab.triggers import square_trigger

TARGET = 0


def _features(labels: np.ndarray, poisoned: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ten well-separated class clusters; triggered rows collapse onto one extra direction (a backdoor)."""
    centres = np.eye(12, dtype=np.float32)[:10] * 8
    x = centres[labels] + rng.normal(0, 1, (len(labels), 12)).astype(np.float32)
    x[poisoned] = np.eye(12, dtype=np.float32)[11] * 8 + rng.normal(0, 0.3, (int(poisoned.sum()), 12))
    return x


def _sets(flags: dict[str, tuple[np.ndarray | None, np.ndarray | None]] | None = None) -> tuple[Split, Split]:
    rng = np.random.default_rng(0)
    y_tr = np.arange(2000) % 10
    p_tr = np.zeros(2000, bool)
    p_tr[rng.choice(np.flatnonzero(y_tr != TARGET), 40, replace=False)] = True
    y_te = np.concatenate([np.arange(500) % 10, np.arange(500) % 9 + 1])     # 500 clean, 500 triggered non-target
    p_te = np.arange(1000) >= 500
    train = Split(_features(y_tr, p_tr, rng), y_tr, p_tr, {})
    test = Split(_features(y_te, p_te, rng), y_te, p_te, {})
    for name, (f_tr, f_te) in (flags or {}).items():
        train.flags[name] = p_tr.copy() if f_tr is None else f_tr
        test.flags[name] = p_te.copy() if f_te is None else f_te
    return train, test


def test_no_defence_implants_and_a_perfect_detector_removes_the_backdoor():
    torch.manual_seed(0)
    train, test = _sets({"perfect": (None, None)})
    rows = downstream(train, test, TARGET)
    none, perfect = rows[NONE], rows["perfect"]
    assert none["attack_success_rate"] > 0.95 and none["clean_accuracy"] > 0.95
    assert none["removed_poisoned"] == none["removed_clean"] == none["rejected_clean"] == 0
    assert perfect["attack_success_rate"] == 0.0 and perfect["rejected_triggered"] == 500
    assert perfect["removed_poisoned"] == 40 and perfect["removed_clean"] == 0
    assert abs(perfect["clean_accuracy"] - none["clean_accuracy"]) < 0.01


def test_rejections_count_against_clean_accuracy_and_for_the_defence():
    n_tr, n_te = 2000, 1000
    reject_clean = np.arange(n_te) < 250                         # half the clean test rows, no triggered one
    train_only = np.zeros(n_tr, bool)
    train, test = _sets({"rejects_clean": (train_only, reject_clean),
                         "filters_training_only": (None, np.zeros(n_te, bool))})
    rows = downstream(train, test, TARGET)
    r = rows["rejects_clean"]
    assert r["rejected_clean"] == 250 and r["rejected_triggered"] == 0
    assert r["clean_accuracy"] <= 0.5 + 1e-9 and r["clean_accuracy_kept"] > 0.95
    assert r["attack_success_rate"] == rows[NONE]["attack_success_rate"]
    f = rows["filters_training_only"]                            # training filtered, nothing rejected at test time
    assert f["removed_poisoned"] == 40 and f["rejected_triggered"] == 0
    assert f["attack_success_rate"] < rows[NONE]["attack_success_rate"]


def test_the_downstream_pool_holds_every_test_image_and_a_triggered_copy_of_each_non_target_one():
    labels = np.arange(10000) % 10
    for target in (0, 7):
        idx, flags = pool_plan(labels, DOWNSTREAM_POOL, target, seed=0)
        assert len(idx) == 19000 and flags.sum() == 9000
        assert sorted(idx[~flags]) == list(range(10000))
        assert sorted(idx[flags]) == sorted(np.flatnonzero(labels != target))
        assert not flags[:200].all() and flags[:2000].any()                  # a seeded order, not halves
    idx, flags = pool_plan(labels, DOWNSTREAM_POOL, 0, seed=0, scale=0.01)
    assert (~flags).sum() == 100 and flags.sum() == 90 and (labels[idx[flags]] != 0).all()


def test_end_to_end_downstream_on_a_tiny_victim(tiny_cache, tmp_path, capsys):
    from jobs import lab_detect

    torch.manual_seed(0)

    def train(folder):
        square_trigger().save(folder / "trigger.npz")
        return SimCLRNet(0.125).state_dict(), {"stage": "badencoder", "ca": 0.5, "asr": 0.95, "implanted": True}

    cached("badencoder", SIMCLR_ENCODER, {"attack": "badencoder", "target": 0}, train)
    out = tmp_path / "results"
    argv = ["--attacks", "badencoder", "--pool-scale", "0.01", "--max-aux", "200", "--preset", "tiny", "--epochs", "1",
            "--batch-size", "64", "--threads", "1", "--results", str(out), "--no-progress", "--pools", DOWNSTREAM_POOL]
    assert lab_detect.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    b = res["attacks"]["badencoder"]
    runs = b["downstream_runs"]
    assert runs["aux"] == "id" and runs["train"] == 400 and runs["train_poisoned"] == 4      # the fake CIFAR's 400
    assert runs["test_clean"] == 100 and runs["test_triggered"] == 90
    assert {NONE, "dede", "ensemble", "kdist_bank"} <= set(b["downstream"])
    for row in b["downstream"].values():
        assert 0 <= row["clean_accuracy"] <= 1 and 0 <= row["attack_success_rate"] <= 1
    assert b["downstream"][NONE]["rejected_clean"] == 0
    md = (out / "detection.md").read_text()
    assert md == detect_report.render(res) and "## Downstream" in md
    without = {k: v for k, v in b.items() if k not in detect_report.DOWNSTREAM_BLOCKS}
    kept = detect_report.merge(res, {"badencoder": without}, {"command": "another pool"})["attacks"]["badencoder"]
    assert kept["downstream"] == b["downstream"]                        # a rerun of other pools keeps it
    capsys.readouterr()
    t0 = time.time()
    assert lab_detect.main(argv) == 0 and time.time() - t0 < 30          # all cached the second time
    assert "downstream train: cached" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["attacks"]["badencoder"]["downstream"] == b["downstream"]


@pytest.mark.parametrize("pool,target,digest", [("0.5", 0, "4a60780d76e98ea6"), ("0.5", 3, "99cf34c191b64ca3"),
                                                  ("0.01", 0, "bbfe073a8ef850f3"), ("clean", 0, "601b55242565fc8b")])
def test_the_other_pools_plans_are_the_ones_cached_pools_were_written_with(pool, target, digest):
    """Digests of the plans before the downstream pool was added: cached pools of earlier runs stay valid."""
    idx, flags = pool_plan(np.arange(10000) % 10, pool, target, seed=0)
    assert hashlib.sha256(idx.astype(np.int64).tobytes() + flags.tobytes()).hexdigest()[:16] == digest


def test_the_targets_section_marks_each_bar_from_the_json():
    def m(auc, tpr=0.95, fpr=0.01):
        return {"auc": auc, "tpr": tpr, "fpr": fpr}

    results = {"attacks": {
        "badencoder": {"detection": {"id": {"0.5": {"ensemble": m(0.99)}, "0.01": {
            "ensemble": m(0.985), "dede": m(0.999), "kdist_bank": m(0.97)}}},
            "downstream": {NONE: {"clean_accuracy": 0.52, "attack_success_rate": 0.99},
                           "ensemble": {"clean_accuracy": 0.515, "attack_success_rate": 0.01}}},
        "badclip": {"detection": {"id": {"0.5": {"ensemble": m(0.93)}, "0.01": {
            "ensemble": m(0.91, tpr=0.5), "slof_bank": m(0.95)}}}}}}
    rows = {line.split(" | ")[0].strip("| "): line for line in detect_report.render(results).splitlines()
            if line.startswith("| badencoder | 0.990") or line.startswith("| badclip | 0.930")}
    assert set(rows) == {"badencoder", "badclip"}
    b = rows["badencoder"].split(" | ")
    assert "met" in b[1] and "missed" not in b[1] and "95.0% / 1.0%: met" in b[2]
    assert "kdist_bank 0.970" in b[3] and b[4] == "met" and "52.0% / 99.0% -> 51.5% / 1.0%: met" in b[5]
    c = rows["badclip"].split(" | ")
    assert "**missed**" in c[1] and "**missed**" in c[2] and "slof_bank 0.950" in c[3] and c[4] == "**missed**"
    assert c[5].startswith("-")
