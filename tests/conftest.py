"""Shared fixtures: small real shards made from ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
torch = pytest.importorskip("torch")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_TGZ = SHARED / "cifar10" / "cifar10-jpg.tar.gz"


@pytest.fixture(scope="session")
def cifar_test_samples():
    """The CIFAR-10 test split as (key, fields) samples (needs ../shared/data)."""
    if not CIFAR_TGZ.exists():
        pytest.skip("../shared/data/cifar10 is not present")
    from pipeline.corpus.ingest import cifar10_samples

    return cifar10_samples("test", str(CIFAR_TGZ))


@pytest.fixture
def small_shards(tmp_path, cifar_test_samples):
    """Three shards of 40 CIFAR test images each."""
    from pipeline.corpus.ingest import write_shards

    return write_shards(iter(cifar_test_samples[:120]), str(tmp_path / "shards"), shard_size=40)
