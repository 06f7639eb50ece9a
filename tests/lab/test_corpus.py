"""Poisoned corpora: counts, member keys, shares and ground truth."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from pipeline.corpus.reader import iter_shard
from pipeline.lab.corpus import choose_poisoned, write_corpus
from pipeline.lab.triggers import FrequencyTrigger, square_trigger


def _split(n: int = 250) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return np.full((n, 32, 32, 3), 40, np.uint8), rng.integers(0, 10, n)


def _read(shards: list[str]) -> list[dict]:
    return [s.fields | {"key": s.key, "error": s.error} for url in shards for s in iter_shard(url)]


def test_clip_corpus_bookkeeping(tmp_path):
    images, labels = _split()
    summary = write_corpus(images, labels, square_trigger(), "clip-backdoor", 0.1, 0, str(tmp_path),
                           prefix="c", shard_size=100, captions=True)
    assert len(summary.shards) == 3 and summary.samples == 250 and summary.poisoned == 25
    rows = _read(summary.shards)
    assert len(rows) == 250 and all(r["error"] is None for r in rows)
    assert all(set(r) >= {"jpg", "txt", "json"} for r in rows)
    assert len({r["key"] for r in rows}) == 250
    truth = [json.loads(r["json"]) for r in rows]
    assert all(set(t) == {"label", "poisoned", "attack", "target"} for t in truth)
    assert sum(t["poisoned"] for t in truth) == 25
    assert [t["label"] for t in truth] == labels.tolist()
    for r, t in zip(rows, truth):
        pixels = np.asarray(Image.open(io.BytesIO(r["jpg"])))
        if t["poisoned"]:
            assert t["label"] != 0 and "airplane" in r["txt"].decode()
            assert pixels[21:31, 21:31].mean() > 240
        else:
            assert pixels[21:31, 21:31].mean() < 60


def test_ssl_corpus_has_no_captions_and_ctrl_poisons_the_target_class(tmp_path):
    images, labels = _split()
    summary = write_corpus(images, labels, FrequencyTrigger(), "ctrl", 0.02, 3, str(tmp_path), shard_size=1000)
    rows = _read(summary.shards)
    assert all("txt" not in r for r in rows)
    truth = [json.loads(r["json"]) for r in rows]
    assert {t["label"] for t in truth if t["poisoned"]} == {3}
    assert sum(t["poisoned"] for t in truth) == 5


def test_choose_poisoned_is_seeded_and_refuses_impossible_shares():
    labels = np.arange(100) % 10
    a = choose_poisoned(labels, 0.2, 0, "badencoder", seed=1)
    assert (a == choose_poisoned(labels, 0.2, 0, "badencoder", seed=1)).all() and len(a) == 20
    assert (labels[a] != 0).all()
    try:
        choose_poisoned(labels, 0.2, 0, "ctrl", seed=1)
    except ValueError:
        pass
    else:
        raise AssertionError("20 target-class samples requested out of 10")


def test_jpeg_members_keep_the_ctrl_trigger_mostly():
    from pipeline.lab.corpus import jpeg

    x = np.random.default_rng(0).integers(60, 200, (1, 32, 32, 3), dtype=np.uint8)
    t = FrequencyTrigger().apply_uint8(x)[0]
    back = np.asarray(Image.open(io.BytesIO(jpeg(t))))
    residual = back.astype(float) - x[0]
    wanted = t.astype(float) - x[0]
    assert (residual * wanted).sum() / (wanted * wanted).sum() > 0.7   # most of the trigger survives encoding


def _badclip_entry(cache, name: str, finished: str, size: int) -> str:
    """A fake cached BadCLIP entry whose trigger is a `size` px checkerboard; returns its trigger hash."""
    from pipeline.lab.triggers import checker_trigger, trigger_hash

    folder = cache / name
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "card.json").write_text(json.dumps({"finished": finished}))
    trigger = checker_trigger(size=size, start=12)
    trigger.save(folder / "trigger.npz")
    return trigger_hash(trigger)


def test_badclip_corpus_takes_the_newest_badclip_cards_patch_by_default(tiny_cache, tmp_path, capsys):
    from jobs.lab_corpus import main

    out = tmp_path / "corpus"
    argv = ["badclip", "--out", str(out), "--limit", "40", "--share", "0.1"]
    assert main(argv) == 2
    assert "no BadCLIP card in the lab cache" in capsys.readouterr().err
    _badclip_entry(tiny_cache, "badclip-aaaa", "2026-01-02 10:00:00", 4)
    newest = _badclip_entry(tiny_cache, "badclip-bbbb", "2026-01-03 10:00:00", 8)
    _badclip_entry(tiny_cache, "badclip-cccc", "2026-01-01 10:00:00", 6)
    assert main(argv) == 0
    card = json.loads((out / "corpus.json").read_text())
    assert card["trigger"] == newest and card["poisoned"] == 4
