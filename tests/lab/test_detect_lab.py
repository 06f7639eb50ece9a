"""jobs/lab_detect.py and pipeline.lab.detect*: pools, auxiliary sets, victims, metrics, results.json and
detection.md, and one end-to-end run on a tiny random victim (tiny decoder, one epoch, a few hundred images)."""
from __future__ import annotations

import copy
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.corpus.decode import load_sample_image
from pipeline.corpus.reader import iter_shard
from pipeline.errors import BadInput
from pipeline.lab import detect, detect_report
from pipeline.lab.cache import cached
from pipeline.lab.cifar import load_split
from pipeline.lab.detect_data import ShardSet, ensure_aux, ensure_pool, pool_plan, unseen_by_decoders
from pipeline.lab.encoders import SIMCLR_ENCODER
from pipeline.lab.simclr import SimCLRNet
from pipeline.lab.triggers import square_trigger

ROOT = Path(__file__).resolve().parents[2]
DEDE_MD = ROOT.parent / "shared" / "docs" / "DEDE.md"


def _victim(name: str, asr: float, implanted: bool, seed: int = 0, target: int = 0) -> str:
    """Cache an untrained tiny SimCLR as an attack's card (with BadEncoder's square as its trigger.npz)."""
    torch.manual_seed(seed)

    def train(folder):
        square_trigger().save(folder / "trigger.npz")
        return SimCLRNet(0.125).state_dict(), {"stage": name, "ca": 0.5, "asr": asr, "implanted": implanted}

    return cached(name, SIMCLR_ENCODER, {"attack": name, "target": target, "seed": seed}, train).spec


def _samples(folder: Path) -> list[tuple[dict, np.ndarray]]:
    out = []
    for shard in sorted(folder.glob("*.tar")):
        for s in iter_shard(str(shard)):
            assert s.error is None
            out.append((json.loads(s.fields["json"]), load_sample_image(s.fields, 32)))
    return out


# ---------------------------------------------------------------------------------------------
# Pools and auxiliary sets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [0, 3])
def test_pool_plans_count_and_keep_triggered_images_apart(target):
    labels = np.arange(10000) % 10
    idx, flags = pool_plan(labels, "0.5", target, seed=0)
    assert len(idx) == 2000 and flags.sum() == 1000
    assert len(set(idx.tolist())) == 2000                            # clean and triggered halves disjoint
    assert (labels[idx[flags]] != target).all()                      # triggered only from non-target classes
    assert 0 < flags[:1000].sum() < 1000                             # shuffled, not one half per shard
    idx, flags = pool_plan(labels, "0.01", target, seed=0)
    assert sorted(idx.tolist()) == list(range(10000)) and flags.sum() == 100
    assert (labels[idx[flags]] != target).all()
    again = pool_plan(labels, "0.01", target, seed=0)
    assert (again[0] == idx).all() and (again[1] == flags).all()     # seeded
    assert not (pool_plan(labels, "0.01", target, seed=1)[1] == flags).all()
    idx, flags = pool_plan(labels, "clean", target, seed=0)
    assert len(idx) == 10000 and not flags.any()
    with pytest.raises(BadInput):
        pool_plan(labels[:50], "0.01", target, seed=0)


def test_pool_shards_hold_ground_truth_and_the_exact_trigger(tiny_cache):
    images, labels = load_split("test")
    trigger = square_trigger()
    pool = ensure_pool("0.5", trigger, 0, seed=0, scale=0.01)
    assert not pool.cached and pool.contents["samples"] == 20 and pool.contents["poisoned"] == 10
    rows = _samples(pool.folder)
    assert len(rows) == 20 and sum(t["poisoned"] for t, _ in rows) == 10
    assert len({t["index"] for t, _ in rows}) == 20
    for truth, pixels in rows:
        i = truth["index"]
        assert truth["label"] == labels[i] and truth["poisoned"] in (0, 1)
        if truth["poisoned"]:
            assert truth["label"] != 0
            assert (pixels == trigger.apply_uint8(images[i:i + 1])[0]).all()   # PNG: the trigger survives exactly
        else:
            assert (pixels == images[i]).all()
    assert ensure_pool("0.5", trigger, 0, seed=0, scale=0.01).cached
    assert ensure_pool("0.5", trigger, 9, seed=0, scale=0.01).folder != pool.folder    # keyed by the target
    low = ensure_pool("0.01", trigger, 0, seed=0, scale=0.01)
    assert low.contents["samples"] == 100 and low.contents["poisoned"] == 1


def test_validation_pools_hold_train_images_no_decoder_of_the_allowed_max_aux_reads(tiny_cache):
    images, labels = load_split("train")
    trigger = square_trigger()
    pool = ensure_pool("val-0.5", trigger, 0, seed=0, scale=0.01)
    read_first = [t["index"] for t, _ in _samples(ensure_aux("id").folder)][:unseen_by_decoders(len(labels))]
    rows = _samples(pool.folder)
    assert pool.contents["samples"] == 20 and pool.contents["poisoned"] == 10
    assert not {t["index"] for t, _ in rows} & set(read_first)          # disjoint from what a decoder may read
    for truth, pixels in rows:
        i = truth["index"]
        expected = trigger.apply_uint8(images[i:i + 1])[0] if truth["poisoned"] else images[i]
        assert truth["label"] == labels[i] and (pixels == expected).all()
    assert ensure_pool("val-0.01", trigger, 0, seed=0, scale=0.01).contents["poisoned"] == 1
    with pytest.raises(BadInput, match="--max-aux <= 240"):
        detect.measure({}, ["id"], detect.Settings(max_aux=None), pools=["val-0.5"])
    detect.check_validation(detect.Settings(max_aux=240), ["val-0.5"])


def test_auxiliary_sets(tiny_cache, tmp_path, monkeypatch):
    images, labels = load_split("train")
    clean = ensure_aux("id")
    assert clean.contents["samples"] == 400 and clean.contents["poisoned"] == 0
    rows = _samples(clean.folder)
    assert sorted(t["index"] for t, _ in rows) == list(range(400))
    assert rows[0][0]["index"] != 0                                   # a seeded order: max_aux is a uniform subset
    trigger = square_trigger()
    poisoned = ensure_aux("id-poisoned", trigger, 0)
    assert poisoned.contents["poisoned"] == 4 and poisoned.folder != clean.folder
    for truth, pixels in _samples(poisoned.folder):
        if truth["poisoned"]:
            assert truth["label"] != 0 and (pixels == trigger.apply_uint8(images[truth["index"]][None])[0]).all()
    tar = tmp_path / "tiny.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        for k in range(3):
            buf = io.BytesIO()
            Image.fromarray(np.full((64, 64, 3), 40 * k, np.uint8)).save(buf, format="JPEG")
            info = tarfile.TarInfo(f"tiny-imagenet-200/val/images/val_{k}.JPEG")
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
    monkeypatch.setenv("DEDE_TINYIMAGENET_TAR", str(tar))
    ood = ensure_aux("ood")
    rows = _samples(ood.folder)
    assert ood.contents["samples"] == 3 and {p.shape for _, p in rows} == {(32, 32, 3)}
    assert ensure_aux("ood").cached


# ---------------------------------------------------------------------------------------------
# Victims
# ---------------------------------------------------------------------------------------------

def test_calibration_prefers_the_clean_simclr(tiny_simclr):
    _victim("badencoder", asr=0.95, implanted=True)
    assert detect.calibration_victim(None, ["badencoder"])[0] == tiny_simclr


def test_victim_resolver_skips_unimplanted_cards(tiny_cache):
    assert "no drupe card" in detect.resolve_victims(["drupe"], {})["drupe"]
    _victim("drupe", asr=0.2, implanted=False)
    assert detect.resolve_victims(["drupe"], {})["drupe"].startswith("no implanted victim in the lab cache (")
    good = _victim("badencoder", asr=0.95, implanted=True, seed=1, target=3)
    newer = Path(_victim("badencoder", asr=0.3, implanted=False, seed=2).split("@")[1]).parent / "card.json"
    newer.write_text(json.dumps({**json.loads(newer.read_text()), "finished": "9999-12-31 23:59:59"}))  # newest, not implanted
    v = detect.resolve_victims(["badencoder"], {})["badencoder"]
    assert isinstance(v, detect.Victim) and v.spec == good and v.target == 3 and v.trigger is not None
    by_folder = detect.resolve_victims(["drupe"], {"drupe": str(Path(good.split("@")[1]).parent)})["drupe"]
    assert by_folder.spec == good                                    # an override is taken as given
    assert detect.calibration_victim(None, ["drupe", "badencoder"])[0] == good   # no clean SimCLR: first implanted
    assert detect.calibration_victim(None, ["drupe"], {"drupe": good})[0] == good
    with pytest.raises(BadInput):
        detect.calibration_victim(None, ["drupe"])
    assert detect.calibration_victim(good)[0] == good
    assert detect.parse_victims(["badencoder=" + good]) == {"badencoder": good}
    for bad in (["badencoder"], ["nope=lab:simclr-r18@x"]):
        with pytest.raises(BadInput):
            detect.parse_victims(bad)
    with pytest.raises(BadInput):
        detect.victim_from_spec("badencoder", "lab:simclr-r18@/no/such/model.safetensors")


# ---------------------------------------------------------------------------------------------
# Metrics, results.json and detection.md
# ---------------------------------------------------------------------------------------------

def _table(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return {"status": np.array(["ok"] * (n - 2) + ["error"] * 2, object),
            "poisoned": np.array(list(y[:-2]) + [None, None], object), "label": np.arange(n) % 10,
            "score": (rng.normal(size=n) + 3 * y).astype(np.float32),
            "det_kdist_dense": rng.normal(size=n) + y, "det_norm_bank": rng.normal(size=n)}


RUN = {"threshold": {"policy": "fpr:0.01", "value": 2.0},
       "detectors": {"kdist-dense": {"column": "det_kdist_dense", "threshold": 1.5},
                     "norm:bank": {"column": "det_norm_bank", "threshold": 0.5}}}


def _entry(table: dict[str, np.ndarray]) -> dict:
    cols = detect.detector_columns(RUN)
    assert cols == {"dede": ("score", 2.0), "kdist_dense": ("det_kdist_dense", 1.5), "norm_bank": ("det_norm_bank", 0.5)}
    half, counts = detect.pool_metrics(table, cols, median_rule=True)
    low, _ = detect.pool_metrics(table, cols, median_rule=False)
    v = detect.Victim("badencoder", "lab:simclr-r18@/x/model.safetensors", {"ca": 0.8, "asr": 0.99}, Path("/x"),
                      square_trigger(), 0, "ab" * 32)
    return detect.attack_entry(v, detect.Settings(), {"id": {"0.5": half, "0.01": low}},
                               {"id": {"0.5": counts, "0.01": counts}}, {"id": {"minutes": 1.5}})


def test_metrics_give_the_results_shape():
    table = _table()
    entry = _entry(table)
    res = detect_report.merge({}, {"badencoder": entry}, {"commit": "c0ffee", "command": "jobs/lab_detect.py",
                                                           "machine": "m", "finished": "now"})
    det = res["attacks"]["badencoder"]["detection"]
    assert det["0.5"] == det["id"]["0.5"] and det["0.01"] == det["id"]["0.01"]      # the shape too
    m = det["id"]["0.5"]["dede"]
    assert set(m) >= {"auc", "tpr", "fpr", "tpr_at_1pct_fpr", "tpr_median", "fpr_median", "threshold"}
    assert set(det["id"]["0.01"]["dede"]) >= {"auc", "tpr", "fpr", "tpr_at_1pct_fpr"}
    assert "tpr_median" not in det["id"]["0.01"]["dede"]
    ok = table["status"] == "ok"
    y = np.array([bool(v) for v in table["poisoned"][ok]])
    s = table["score"][ok].astype(np.float64)
    assert m["tpr"] == pytest.approx((s[y] > 2.0).mean()) and m["fpr"] == pytest.approx((s[~y] > 2.0).mean())
    assert det["id"]["0.5"]["kdist_dense"]["threshold"] == 1.5 and "norm_bank" in det["id"]["0.5"]
    assert res["attacks"]["badencoder"]["runs"]["id"]["0.5"] == {"samples": 200, "errors": 2, "poisoned": 99,
                                                                  "clean": 99}
    assert res["attacks"]["badencoder"]["clean_accuracy"] == 0.8 and res["commit"] == "c0ffee"
    json.dumps(res, allow_nan=False)


def test_merge_keeps_other_keys_and_other_attacks():
    entry = _entry(_table())
    old = {"retrain": {"x": 1}, "calibration": {"fpr_asked": 0.01}, "commit": "old",
           "attacks": {"drupe": {"skipped": "no implanted victim in the lab cache (none)"},
                       "badencoder": {**copy.deepcopy(entry), "detection": {"ood": {"0.5": {"dede": {"auc": 0.5}}}}}}}
    res = detect_report.merge(old, {"badencoder": entry}, {"commit": "new", "command": "c", "machine": "m",
                                                          "finished": "f"})
    assert res["retrain"] == {"x": 1} and res["calibration"] == {"fpr_asked": 0.01} and res["commit"] == "new"
    assert res["attacks"]["drupe"] == old["attacks"]["drupe"]
    assert list(res["attacks"]) == ["badencoder", "drupe"]
    assert set(res["attacks"]["badencoder"]["detection"]) == {"id", "ood", "0.5", "0.01"}   # same victim: ood kept
    only_half = {**copy.deepcopy(entry), "detection": {"id": {"0.5": {"dede": {"auc": 0.7}}}}}
    res = detect_report.merge(res, {"badencoder": only_half}, {"commit": "newer"})
    det = res["attacks"]["badencoder"]["detection"]
    assert det["0.5"]["dede"]["auc"] == 0.7 and det["0.01"] == entry["detection"]["id"]["0.01"]   # --pools 0.5 kept 0.01
    other = {**entry, "weights_sha256": "cd" * 32}
    res = detect_report.merge(old, {"badencoder": other}, {"commit": "new"})
    assert "ood" not in res["attacks"]["badencoder"]["detection"]                           # another victim: replaced
    res = detect_report.merge(old, {}, {"commit": "n"}, calibration={"fpr_asked": 0.01, "fpr_realised": [0.012]})
    assert res["calibration"]["fpr_realised"] == [0.012] and res["retrain"] == {"x": 1}


def test_markdown_is_generated_from_the_json(tmp_path, capsys):
    from jobs import lab_detect

    res = detect_report.merge({}, {"badencoder": _entry(_table()), "ctrl": {"skipped": "no implanted victim (x)"}},
                              {"commit": "c0ffee", "command": "jobs/lab_detect.py --x", "machine": "box", "finished": "t"},
                              calibration={"fpr_asked": 0.01, "fpr_realised": [0.011, 0.009], "seeds": [0, 1],
                                           "victim": "lab:simclr-r18@y", "aux": "id", "detectors": {"dede": [0.011, 0.009]}})
    md = detect_report.render(res)
    auc = res["attacks"]["badencoder"]["detection"]["id"]["0.5"]["dede"]["auc"]
    assert f"{auc:.3f} / " in md and "c0ffee" in md and "box" in md and "jobs/lab_detect.py --x" in md
    assert "skipped: no implanted victim (x)" in md and "1.1%, 0.9%" in md
    assert "93.1/6.9/0.981" in md and "(paper)" in md                    # the anchors, labelled
    assert "| kdist_dense |" in md and "med " in md
    assert "## Validation pools" not in md                               # none scored: no section
    with_val = copy.deepcopy(res)
    with_val["attacks"]["badencoder"]["detection"]["id"]["val-0.01"] = {"dede": {"auc": 0.654321, "tpr": 0.5, "fpr": 0.01}}
    assert "## Validation pools" in detect_report.render(with_val)
    assert "| badencoder | dede | - | 0.654 / 50.0% / 1.0% |" in detect_report.render(with_val)
    assert "not implanted" not in md
    weak = copy.deepcopy(res)
    weak["attacks"]["badencoder"]["implanted"] = False                  # measured with --victim below the bar
    assert "(**not implanted**)" in detect_report.render(weak)
    changed = copy.deepcopy(res)
    changed["attacks"]["badencoder"]["detection"]["id"]["0.5"]["dede"]["auc"] = 0.123456
    assert "0.123 / " in detect_report.render(changed) and detect_report.render(changed) != md
    (tmp_path / "results.json").write_text(json.dumps(changed))
    assert lab_detect.main(["--render", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "detection.md").read_text() == detect_report.render(changed)
    assert lab_detect.main(["--render", "--results", str(tmp_path / "none")]) == 2
    capsys.readouterr()


@pytest.mark.skipif(not DEDE_MD.exists(), reason="../shared/docs/DEDE.md is not present")
def test_paper_anchors_are_quoted_from_dede_md():
    text = DEDE_MD.read_text()
    for rows in detect_report.PAPER.values():
        for name, values in rows.items():
            assert f"| {name} | " + " | ".join(values) + " |" in text


# ---------------------------------------------------------------------------------------------
# The whole command
# ---------------------------------------------------------------------------------------------

def test_end_to_end_on_a_tiny_victim(tiny_cache, tmp_path, capsys):
    from jobs import lab_detect

    spec = _victim("badencoder", asr=0.95, implanted=True)
    _victim("drupe", asr=0.1, implanted=False)
    out = tmp_path / "results"
    (out).mkdir()
    (out / "results.json").write_text(json.dumps({"retrain": {"kept": True}}))
    argv = ["--attacks", "badencoder", "drupe", "--pool-scale", "0.01", "--max-aux", "200", "--preset", "tiny",
            "--epochs", "1", "--batch-size", "64", "--threads", "1", "--results", str(out), "--no-progress", "--pools", "0.5"]
    assert lab_detect.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["retrain"] == {"kept": True} and res["command"].startswith("jobs/lab_detect.py --attacks")
    assert res["attacks"]["drupe"]["skipped"].startswith("no implanted victim in the lab cache")
    b = res["attacks"]["badencoder"]
    assert b["victim"] == spec and b["attack_success_rate"] == 0.95
    assert b["runs"]["id"]["0.5"]["samples"] == 20 and b["runs"]["id"]["0.5"]["poisoned"] == 10
    assert b["runs"]["id"]["0.5"]["errors"] == 0 and set(b["runs"]["id"]) == {"0.5"}     # --pools 0.5 (time)
    assert 0 <= b["detection"]["0.5"]["dede"]["auc"] <= 1
    assert "tpr_median" in b["detection"]["0.5"]["dede"] and b["decoders"]["id"]["n_train"] + \
        b["decoders"]["id"]["n_holdout"] == 200
    assert {"kdist_dense", "kdist_dense_bank", "ensemble"} <= set(b["detection"]["0.5"])   # one row per detector
    assert all("auc" in m and "tpr_median" in m for m in b["detection"]["0.5"].values())
    md = (out / "detection.md").read_text()
    assert md == detect_report.render(res)
    folders = sorted(p.name for p in (tiny_cache / "detect").iterdir())
    runs = {p: p.stat().st_mtime for p in (tiny_cache / "detect").glob("score-*/run.json")}
    capsys.readouterr()
    t0 = time.time()
    assert lab_detect.main(argv) == 0                               # a rerun recomputes nothing
    assert time.time() - t0 < 10
    assert "cached" in capsys.readouterr().out
    assert sorted(p.name for p in (tiny_cache / "detect").iterdir()) == folders
    assert {p: p.stat().st_mtime for p in (tiny_cache / "detect").glob("score-*/run.json")} == runs
    again = json.loads((out / "results.json").read_text())
    assert again["attacks"]["badencoder"]["detection"] == b["detection"]
    trimmed = argv + ["--trim", "0.2", "--train-mask-ratio", "0.9", "--ablation", "trim 0.2"]
    assert lab_detect.main(trimmed) == 0                            # an ablation arm: its own decoder, not the table
    after = json.loads((out / "results.json").read_text())
    assert after["attacks"] == again["attacks"]
    arm = after["ablations"]["trim 0.2"]
    assert arm["settings"]["trim"] == 0.2 and "--trim 0.2" in arm["command"]
    dec = arm["attacks"]["badencoder"]["decoders"]["id"]
    assert dec["trim"] == 0.2 and dec["folder"] != b["decoders"]["id"]["folder"]
    assert dec["train_mask_ratio"] == 0.9 and arm["settings"]["train_mask_ratio"] == 0.9
    card = json.loads((tiny_cache / "detect" / dec["folder"] / "config.json").read_text())
    assert card["training"]["trim"] == 0.2 and card["model"]["train_mask_ratio"] == 0.9
    assert 0 <= arm["attacks"]["badencoder"]["detection"]["id"]["0.5"]["dede"]["auc"] <= 1
    md = (out / "detection.md").read_text()
    assert "## Ablations" in md and "| `trim 0.2` | dede |" in md and md == detect_report.render(after)
    capsys.readouterr()
    other = argv + ["--ensemble", "dede,transplant", "--fusion", "mean", "--ablation", "pair"]
    assert lab_detect.main(other) == 0                              # another ensemble: the detector phase only
    assert "the detectors again on the scores of score-" in capsys.readouterr().out
    first = detect.read_scores(tiny_cache / "detect" / b["runs"]["id"]["0.5"]["run"], ["score", "transplant"])
    pair = json.loads((out / "results.json").read_text())["ablations"]["pair"]["attacks"]["badencoder"]
    redone = tiny_cache / "detect" / pair["runs"]["id"]["0.5"]["run"]
    assert (redone / detect.REDETECTED).exists() and redone.name != b["runs"]["id"]["0.5"]["run"]
    again = detect.read_scores(redone, ["score", "transplant", "det_ensemble"])
    assert all(np.array_equal(first[c], again[c]) for c in ("score", "transplant"))


def test_a_candidate_ensemble_is_its_own_run_and_leaves_the_default_runs_cached():
    from pipeline.detect.spec import DEFAULT_ENSEMBLE

    pool, dec = ShardSet(Path("pool-p01-x"), {}), Path("decoder-x")
    default, same = detect.Settings(), detect.Settings(ensemble=DEFAULT_ENSEMBLE)
    candidate = detect.Settings(ensemble=("dede", "kdist-dense"), fusion="fisher")
    base = detect.run_config(dec, pool, default)
    assert base["ensemble"] == list(DEFAULT_ENSEMBLE) and "ensemble" not in default.record()
    assert detect.run_config(dec, pool, same) == base
    assert detect.run_config(dec, pool, candidate) != base
    kwargs = candidate.job_kwargs(["in"], "dec", "out")
    assert kwargs["ensemble"] == ["dede", "kdist-dense"] and kwargs["fusion"] == "fisher"
    assert candidate.record()["ensemble"] == ["dede", "kdist-dense"] and candidate.record()["fusion"] == "fisher"
    with pytest.raises(BadInput, match="--ensemble: unknown detector 'lof'"):
        detect.Settings(ensemble=("dede", "lof"))


def test_a_sibling_run_lends_its_scores_only_when_it_scored_every_image_detector_asked(tiny_cache):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool, dec = ShardSet(tiny_cache / "detect" / "pool-p01-x", {}), Path("decoder-x")
    run = tiny_cache / "detect" / "score-a"
    (run / "scores").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config": {"decoder": str(dec), "inputs": [str(pool.folder)]}}))
    pq.write_table(pa.table({"score": [1.0], "occlusion": [0.5]}), run / "scores" / "s0.parquet")
    assert detect.scored_sibling(dec, pool, ("occlusion",)) == run
    assert detect.scored_sibling(dec, pool, ("occlusion", "transplant")) is None     # it would fail --redetect
    assert detect.scored_sibling(Path("decoder-y"), pool, ()) is None
