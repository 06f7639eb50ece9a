"""The lab cache: a second run with the same config trains nothing; cached specs load via create_encoder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.encoders import create_encoder
from pipeline.lab import clean
from pipeline.lab.simclr import SimCLRConfig


@pytest.fixture
def tiny_cifar(monkeypatch, tmp_path):
    monkeypatch.setenv("DEDE_LAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    splits = {s: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n))
              for s, n in (("train", 64), ("test", 20))}
    monkeypatch.setattr(clean, "load_split", lambda split: splits[split])
    return tmp_path / "cache"


def test_second_run_with_same_config_trains_nothing(tiny_cifar, monkeypatch):
    cfg = SimCLRConfig(width=0.125, epochs=1, batch=32, monitor_bank=64, monitor_test=20)
    first = clean.clean_simclr(cfg, torch.device("cpu"))
    assert first.weights.exists() and first.folder.parent == tiny_cifar
    card = json.loads((first.folder / "card.json").read_text())
    assert card["config"]["width"] == 0.125 and 0 <= card["ca"] <= 1 and card["train_minutes"] >= 0

    def boom(*args, **kwargs):
        raise AssertionError("trained again on a cache hit")

    monkeypatch.setattr(clean, "train_simclr", boom)
    second = clean.clean_simclr(cfg, torch.device("cpu"))
    assert second.folder == first.folder and second.card == json.loads(json.dumps(first.card))
    with pytest.raises(AssertionError):
        clean.clean_simclr(SimCLRConfig(width=0.125, epochs=2, batch=32), torch.device("cpu"))

    enc = create_encoder(first.spec, device="cpu")
    assert enc.embed_dim == 64 and enc.input_size == 32
    feats = enc.embed(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
    assert feats.shape == (2, 64)
