"""One torch thread for the lab's tests (tiny models run faster without thread contention), and a
temporary lab cache with a tiny fake CIFAR-10 and a tiny untrained clean SimCLR encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.lab.cache import cached
from pipeline.lab.encoders import SIMCLR_ENCODER
from pipeline.lab.simclr import SimCLRNet


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch) -> Path:
    """$DEDE_LAB_CACHE set to a temporary folder holding a fake CIFAR-10: random images, classes in turn
    (400 train, 100 test)."""
    cache = tmp_path / "lab-cache"
    cache.mkdir()
    monkeypatch.setenv("DEDE_LAB_CACHE", str(cache))
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("test", 100)):
        np.savez(cache / f"cifar10_{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=np.arange(n, dtype=np.int64) % 10)
    return cache


@pytest.fixture
def tiny_simclr(tiny_cache) -> str:
    """The spec of an untrained width-0.125 SimCLR encoder cached with a card, as lab_simclr.py leaves one."""
    torch.manual_seed(0)
    entry = cached("simclr-w0.125", SIMCLR_ENCODER, {"stage": "clean-simclr", "untrained": True},
                   lambda folder: (SimCLRNet(0.125).state_dict(), {"stage": "clean-simclr", "probe_l2_ca": 0.1}))
    return entry.spec
