"""SimCLR pre-training of a CIFAR ResNet-18 (BadEncoder's recipe) with a timed kNN monitor."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.encoders import CIFAR_MEAN, CIFAR_STD
from pipeline.lab.augment import SimCLRAugment
from pipeline.lab.budget import TimedLoop
from pipeline.lab.compute import autocast, prepare, to_input
from pipeline.lab.evaluate import as_float01, extract, knn_predict, accuracy
from pipeline.models.resnet_cifar import CifarResNet


class SimCLRNet(nn.Module):
    """CIFAR ResNet-18 backbone plus projection head d -> d -> 128 (BN, ReLU), all scaled by width."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.backbone = CifarResNet("resnet18", width)
        d = self.backbone.out_dim
        self.head = nn.Sequential(nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(inplace=True),
                                  nn.Linear(d, max(16, round(128 * width))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent over 2B views: each view's positive is its pair, the other 2B - 2 are negatives."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@dataclass
class SimCLRConfig:
    """Everything that decides a SimCLR run (its hash names the cache entry)."""

    width: float = 0.25
    epochs: int = 500
    max_minutes: float = 50.0
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.5
    schedule: str = "cosine"
    crop_scale: tuple[float, float] = (0.2, 1.0)
    seed: int = 0
    monitor_every_minutes: float = 5.0
    monitor_bank: int = 5000
    monitor_test: int = 1000
    knn_k: int = 200
    knn_temperature: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def knn_monitor(net: nn.Module, bank: np.ndarray, bank_y: np.ndarray, test: np.ndarray, test_y: np.ndarray,
                device: torch.device, k: int, temperature: float) -> float:
    """kNN accuracy of the backbone's features (bank = labelled train images)."""
    fb = extract(net, bank, CIFAR_MEAN, CIFAR_STD, device)
    ft = extract(net, test, CIFAR_MEAN, CIFAR_STD, device)
    return accuracy(knn_predict(fb, torch.as_tensor(bank_y), ft, k=k, temperature=temperature), torch.as_tensor(test_y))


def train_simclr(cfg: SimCLRConfig, images: np.ndarray, labels: np.ndarray, test: np.ndarray,
                 test_labels: np.ndarray, device: torch.device, curve_path: Path | None = None,
                 init: dict[str, torch.Tensor] | None = None) -> tuple[SimCLRNet, list[dict[str, float]], float]:
    """Train on uint8 images (from `init`'s weights when given, else from scratch) until cfg.epochs or
    cfg.max_minutes of training time; returns the model, the monitor curve (kNN CA at regular
    training-time points) and the training minutes."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    bank_idx = rng.choice(len(images), min(cfg.monitor_bank, len(images)), replace=False)
    test_idx = rng.choice(len(test), min(cfg.monitor_test, len(test)), replace=False)
    net = SimCLRNet(cfg.width)
    if init is not None:
        net.load_state_dict(init)
    net = prepare(net, device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    aug = SimCLRAugment(crop_scale=tuple(cfg.crop_scale))
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    data = torch.as_tensor(images)

    def monitor() -> dict[str, float]:
        return {"knn_ca": knn_monitor(net.backbone, images[bank_idx], labels[bank_idx], test[test_idx],
                                      test_labels[test_idx], device, cfg.knn_k, cfg.knn_temperature)}

    loop = TimedLoop(len(images), cfg.batch, cfg.epochs, cfg.max_minutes, cfg.monitor_every_minutes, monitor,
                     f"simclr w{cfg.width}", curve_path)
    for idx in loop:
        if cfg.schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = cfg.lr * loop.cosine()
        x = as_float01(data[idx])
        v = torch.cat([(aug(x) - mean) / std, (aug(x) - mean) / std])
        with autocast(device):
            z = net(to_input(v, device))
        loss = nt_xent(z[:len(x)], z[len(x):], cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loop.log(loss=f"{loss.item():.3f}")
    return net, loop.curve, loop.minutes
