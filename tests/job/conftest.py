"""Fixtures for the score_corpus job tests: one tiny decoder and one local Ray per session, and a
`ray start` head for `ray job submit`."""
from __future__ import annotations

import os

import pytest

from tests.job.recovery_utils import ray_head

# Dummy credentials for moto, set before any Ray worker starts so workers inherit them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def cifar_shard_dir(tmp_path_factory, cifar_test_samples):
    """Four shards of 40 CIFAR test images (160 samples)."""
    from pipeline.corpus.ingest import write_shards

    d = tmp_path_factory.mktemp("cifar_shards")
    write_shards(iter(cifar_test_samples[:160]), str(d), shard_size=40)
    return d


def frozen_encoder(d) -> str:
    """A seeded random CIFAR ResNet saved as a checkpoint. An encoder spec WITHOUT a checkpoint is
    randomly initialised in every process, so each Ray actor would embed differently."""
    import torch

    from pipeline.checkpoints import save_safetensors
    from pipeline.encoders import create_encoder

    torch.manual_seed(0)
    enc = create_encoder("resnet:resnet18-cifar-w0.125", "cpu")
    path = str(d / "encoder.safetensors")
    save_safetensors(enc.backbone.state_dict(), path)
    return f"resnet:resnet18-cifar-w0.125@{path}"


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory, cifar_test_samples):
    """A tiny decoder trained for one epoch on 200 CIFAR test images (seconds on CPU)."""
    from pipeline.corpus.ingest import write_shards
    from pipeline.dede.train import TrainConfig, train_decoder

    d = tmp_path_factory.mktemp("decoder")
    spec = frozen_encoder(d)
    write_shards(iter(cifar_test_samples[-200:]), str(d / "aux"), shard_size=100)
    out = str(d / "dede")
    train_decoder(TrainConfig(encoder=spec, data=[str(d / "aux")], out=out, epochs=1, batch_size=16,
                              model="tiny", device="cpu", progress=False))
    return out


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the session (2 CPUs, no dashboard)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def head(tmp_path):
    """A `ray start --head` on 127.0.0.1 with 2 CPUs and job submission, stopped after the test."""
    with ray_head(tmp_path, num_cpus=2) as h:
        yield h
