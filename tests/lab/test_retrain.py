"""The retraining proof (issue 15): corpus bookkeeping, the shard reader, clean/ read back byte for byte by
webdataset, and a tiny end-to-end run that writes the results section."""
from __future__ import annotations

import io
import json
import tarfile
import time

import numpy as np
import pytest

from pipeline.lab import retrain
from pipeline.lab.clip_model import TEMPLATES
from pipeline.corpus.cifar import CLASSES


def _members(folder) -> dict[str, dict[str, bytes]]:
    """key -> {suffix: bytes} of every shard in `folder`, read with tarfile (not the code under test)."""
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                key, _, suffix = m.name.partition(".")
                out.setdefault(key, {})[suffix] = tf.extractfile(m).read()
    return out


def test_corpus_bookkeeping_poisons_the_share_and_only_those(tiny_cache):
    rs = retrain.RetrainSettings(share=0.05, limit=200)
    trigger = retrain.default_trigger()
    poisoned, clean = retrain.ensure_corpus(trigger, rs, True), retrain.ensure_corpus(trigger, rs, False)
    assert poisoned.contents["samples"] == clean.contents["samples"] == 200
    assert poisoned.contents["poisoned"] == 10 and clean.contents["poisoned"] == 0
    p, c = _members(poisoned.folder), _members(clean.folder)
    assert sorted(p) == sorted(c) and len(p) == 200
    hit = [k for k in p if json.loads(p[k]["json"])["poisoned"]]
    assert len(hit) == 10
    for k in p:
        truth = json.loads(p[k]["json"])
        caption = p[k]["txt"].decode()
        if k in hit:                        # a non-target image, captioned as the target, the patch stamped
            assert truth["label"] != rs.target and caption in {t.format(CLASSES[rs.target]) for t in TEMPLATES}
            assert p[k]["jpg"] != c[k]["jpg"]
            assert c[k]["txt"].decode() in {t.format(CLASSES[truth["label"]]) for t in TEMPLATES}
        else:                               # identical pair in both corpora
            assert p[k] == c[k]
    assert retrain.ensure_corpus(trigger, rs, True).cached      # written once


def test_read_pairs_drops_keys_and_decodes_images(tiny_cache):
    rs = retrain.RetrainSettings(share=0.05, limit=100)
    corpus = retrain.ensure_corpus(retrain.default_trigger(), rs, True)
    members = _members(corpus.folder)
    drop = frozenset(sorted(members)[:7])
    pairs = retrain.read_pairs(str(corpus.folder), drop, progress=False)
    assert len(pairs.keys) == 93 and not drop & set(pairs.keys)
    assert pairs.images.shape == (93, 32, 32, 3) and pairs.images.dtype == np.uint8
    assert pairs.texts == [members[k]["txt"].decode() for k in pairs.keys]
    with pytest.raises(ValueError, match="pipe:"):
        retrain.read_pairs("pipe:cat x.tar")


def test_best_density_baseline_is_read_from_the_table():
    results = {"attacks": {"a": {"detection": {"0.5": {"kdist_bank": {"auc": 0.9}, "slof": {"auc": 0.5},
                                                       "dao_dense_bank": {"auc": 0.95}, "dede": {"auc": 1.0}},
                                               "0.01": {"kdist_bank": {"auc": 0.8}, "dao_dense_bank": {"auc": 0.9}}}}}}
    assert retrain.best_density_baseline(results) == "dao-dense:bank"
    assert retrain.best_density_baseline({}) is None


def test_tiny_end_to_end_writes_the_section_and_clean_shards_read_back_byte_for_byte(tiny_cache, tmp_path, capsys):
    import webdataset as wds

    from jobs import lab_retrain

    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"attacks": {"kept": True}}))
    argv = ["--limit", "300", "--share", "0.02", "--epochs", "1", "--decoder-epochs", "1", "--max-aux", "200",
            "--preset", "tiny", "--aux", "corpus", "--detectors", "ensemble", "kdist", "--baseline", "kdist",
            "--threads", "1", "--no-progress", "--results", str(out)]
    assert lab_retrain.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["attacks"] == {"kept": True}
    s = res["retrain"]["clip-backdoor"]
    assert s["corpus"] == {"pairs": 300, "poisoned": 6, "share": 0.02, "folder": s["corpus"]["folder"]}
    assert "retrained_ood" not in s                   # no ood decoder asked for
    assert list(s["reference_seeds"]) == ["1", "2"]      # the clean reference again at CLIP seeds 1 and 2
    for m in [*(s[arm] for arm in set(retrain.ARMS) - {"retrained_ood", "reference_seeds"}), *s["reference_seeds"].values()]:
        assert 0 <= m["clean_accuracy"] <= 1 and 0 <= m["attack_success_rate"] <= 1
    assert s["reference_seeds"]["1"]["card"] != s["clean_reference"]["card"] != s["reference_seeds"]["2"]["card"]
    assert "CLIP seed 2 (the reference's spread)" in (out / "retrain.md").read_text()
    removed = s["removed"]
    assert s["retrained"]["pairs"] == 300 - removed["poisoned"] - removed["clean"]
    assert s["random"]["pairs"] == 297 and sum(s["removed_by"]["random"].values()) == 3
    assert {"dede", "kdist", "slof_bank", "ensemble"} <= set(s["detection"]["corpus"])
    assert s["command"].startswith("jobs/lab_retrain.py --limit 300")
    assert (out / "retrain.md").read_text() == retrain.render(res)

    run_dir = tiny_cache / "detect" / s["runs"]["corpus"]["run"]
    source = _members(tiny_cache / "detect" / s["corpus"]["folder"])
    kept = list(wds.WebDataset(sorted(str(p) for p in (run_dir / "clean").glob("*.tar")), shardshuffle=False,
                               empty_check=False))
    assert len(kept) == s["retrained"]["pairs"]
    for sample in kept:                      # same keys, same member bytes as the corpus the job read
        fields = {k: v for k, v in sample.items() if not k.startswith("__")}
        assert fields == source[sample["__key__"]]

    capsys.readouterr()
    t0 = time.time()
    assert lab_retrain.main(argv) == 0       # a rerun recomputes nothing
    assert time.time() - t0 < 15
    assert json.loads((out / "results.json").read_text())["retrain"]["clip-backdoor"]["poisoned"] == s["poisoned"]
