"""Proof test for the core: a decoder trained on clean CIFAR-10 flags a simulated backdoor.

The victim is a frozen, randomly initialised CIFAR ResNet-18 (width 0.25) wrapped so that every image
bearing BadEncoder's white 10x10 square at rows/cols 21-30 gets the embedding of one fixed reference
image (an airplane): exactly the cross-cluster mapping a backdoor forces.
With DEDE_TEST_RESULTS=FILE the measured figures are appended to FILE as one JSON line.
"""
import json
import os
import platform
import subprocess
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pipeline.corpus.decode import load_sample_image
from pipeline.corpus.ingest import write_shards
from pipeline.dede.model import dede_small
from pipeline.dede.scorer import Scorer
from pipeline.dede.train import TrainConfig, train_decoder
from pipeline.encoders import CIFAR_MEAN, CIFAR_STD, Encoder, register_encoder
from pipeline.models.resnet_cifar import CifarResNet

pytestmark = pytest.mark.slow
N_AUX = int(os.environ.get("DEDE_TEST_AUX", 10000))
EPOCHS = int(os.environ.get("DEDE_TEST_EPOCHS", 20))
WIDTH = int(os.environ.get("DEDE_TEST_WIDTH", 128))
DEPTH = int(os.environ.get("DEDE_TEST_DEPTH", 2))
ENC_WIDTH = float(os.environ.get("DEDE_TEST_ENC_WIDTH", 0.25))
PATCH = int(os.environ.get("DEDE_TEST_PATCH", 8))


def stamp(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[21:31, 21:31] = 255
    return out


class SimulatedBackdoor(torch.nn.Module):
    """A random CIFAR ResNet whose output for triggered inputs is the reference image's embedding."""

    def __init__(self, reference: np.ndarray):
        super().__init__()
        torch.manual_seed(1234)
        self.net = CifarResNet("resnet18", ENC_WIDTH).eval()
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))
        ref = torch.from_numpy(reference.copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            self.register_buffer("ref_emb", self.net((ref - self.mean) / self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.net(x)
        raw = x * self.std + self.mean
        triggered = (raw[:, :, 21:31, 21:31] > 0.98).flatten(1).all(dim=1)
        return torch.where(triggered[:, None], self.ref_emb.expand_as(emb), emb)


def test_decoder_flags_simulated_backdoor(tmp_path, cifar_test_samples):
    from pipeline.corpus.ingest import cifar10_samples

    train = cifar10_samples("train")
    airplane = next(f for _, f in train if f["cls"] == b"0")
    reference = load_sample_image(airplane, 32)

    @register_encoder("lab", "test-simulated-backdoor")
    def _build(spec):
        backbone = SimulatedBackdoor(reference)
        return Encoder(backbone, spec, backbone.net.out_dim, 32, CIFAR_MEAN, CIFAR_STD)

    write_shards(iter(train[:N_AUX]), str(tmp_path / "aux"), shard_size=5000)
    t0, c0 = time.time(), time.process_time()
    train_decoder(TrainConfig(encoder="lab:test-simulated-backdoor", data=[str(tmp_path / "aux")],
                              out=str(tmp_path / "dec"), epochs=EPOCHS, batch_size=256, lr=1e-3,
                              model=dede_small(width=WIDTH, patch_size=PATCH, encoder_depth=DEPTH, decoder_depth=DEPTH),
                              holdout=0.1, device="cpu", progress=False))
    minutes, cpu_minutes = (time.time() - t0) / 60, (time.process_time() - c0) / 60
    scorer = Scorer(str(tmp_path / "dec"), device="cpu")
    clean = [(k, load_sample_image(f, 32)) for k, f in cifar_test_samples[:1000]]
    trig = [(k, stamp(load_sample_image(f, 32))) for k, f in cifar_test_samples[1000:2000]]
    scores = {}
    for name, items in (("clean", clean), ("triggered", trig)):
        parts = [scorer.score(np.stack([im for _, im in items[i:i + 250]]), [k for k, _ in items[i:i + 250]]).scores
                 for i in range(0, len(items), 250)]
        scores[name] = np.concatenate(parts)
    y = np.r_[np.zeros(1000), np.ones(1000)]
    auc = roc_auc_score(y, np.r_[scores["clean"], scores["triggered"]])
    t = scorer.threshold()  # the default policy, fpr:0.01 from held-out clean scores
    fpr = float(np.mean(scores["clean"] > t))
    tpr = float(np.mean(scores["triggered"] > t))
    print(f"\nDETECTION aux={N_AUX} epochs={EPOCHS} width={WIDTH} depth={DEPTH} patch={PATCH} enc_width={ENC_WIDTH} "
          f"train_minutes={minutes:.2f} train_cpu_minutes={cpu_minutes:.2f} AUC={auc:.4f} "
          f"TPR={tpr:.3f} FPR={fpr:.3f} threshold={t:.1f}")
    if os.environ.get("DEDE_TEST_RESULTS"):
        record(os.environ["DEDE_TEST_RESULTS"], {
            "aux": N_AUX, "epochs": EPOCHS, "width": WIDTH, "depth": DEPTH, "patch": PATCH, "enc_width": ENC_WIDTH,
            "train_minutes": round(minutes, 2), "train_cpu_minutes": round(cpu_minutes, 2),
            "auc": round(auc, 4), "tpr": round(tpr, 4), "fpr": round(fpr, 4), "threshold": round(float(t), 2)})
    assert auc >= 0.95
    assert fpr <= 0.02
    assert tpr >= 0.8


def record(path: str, figures: dict) -> None:
    """Append the figures with the commit, machine and load they were measured on."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    row = {**figures, "commit": commit or None, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
           "load_avg_1m": round(os.getloadavg()[0], 2), "torch_threads": torch.get_num_threads()}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
