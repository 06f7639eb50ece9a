"""Frozen-feature evaluation: feature extraction, kNN monitor, linear probe, attack success rate."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.lab.compute import autocast, to_input

Transform = Callable[[torch.Tensor], torch.Tensor]
POISON_SHARE = 0.01
"""Share of the train split triggered (and relabelled to the target) in the lab's poisoned train sets: the
poisoned-downstream probe here (DeDe Table 2's downstream set) and the `id-poisoned` auxiliary set."""


def poisoned_rows(labels: np.ndarray, target: int, rng: np.random.Generator,
                  share: float = POISON_SHARE) -> np.ndarray:
    """Indices of round(share x len(labels)) rows outside the target class, drawn by `rng` without replacement."""
    return rng.choice(np.flatnonzero(labels != target), int(round(len(labels) * share)), replace=False)


def as_float01(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    t = torch.as_tensor(images)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def extract(net: nn.Module, images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
            device: torch.device, batch: int = 500, transform: Transform | None = None) -> torch.Tensor:
    """Features (N, D) float32 on CPU of uint8 images; `transform` acts on [0, 1] pixels before normalising."""
    was_training = net.training
    net.eval()
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images), batch):
        x = as_float01(images[i:i + batch])
        if transform is not None:
            x = transform(x)
        with autocast(device):
            out.append(net(to_input((x - m) / s, device)).float().cpu())
    net.train(was_training)
    return torch.cat(out)


def knn_predict(bank: torch.Tensor, bank_y: torch.Tensor, query: torch.Tensor, classes: int = 10,
                k: int = 200, temperature: float = 0.5, chunk: int = 1000) -> torch.Tensor:
    """Weighted kNN (InstDisc monitor): top-k cosine neighbours vote with exp(sim / temperature)."""
    bank = F.normalize(bank, dim=1)
    query = F.normalize(query, dim=1)
    preds = []
    for i in range(0, len(query), chunk):
        sim = query[i:i + chunk] @ bank.T
        w, idx = sim.topk(min(k, len(bank)), dim=1)
        votes = torch.zeros(len(w), classes).scatter_add_(1, bank_y[idx], (w / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


class LinearProbe:
    """Multinomial logistic regression on standardised frozen features (full-batch L-BFGS); with
    `l2=True` features are L2-normalised first, as BadEncoder's downstream classifiers do."""

    def __init__(self, classes: int = 10, weight_decay: float = 1e-4, steps: int = 200, l2: bool = False):
        self.classes, self.weight_decay, self.steps, self.l2 = classes, weight_decay, steps, l2

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) if self.l2 else x

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "LinearProbe":
        x = self._prep(x)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        z = (x - self.mu) / self.sd
        self.layer = nn.Linear(z.shape[1], self.classes)
        opt = torch.optim.LBFGS(self.layer.parameters(), lr=1, max_iter=self.steps, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(self.layer(z), y) + self.weight_decay * self.layer.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer((self._prep(x) - self.mu) / self.sd).argmax(1)


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Share of correct predictions."""
    return float((pred == y).float().mean())


def attack_success(pred_triggered: torch.Tensor, y: torch.Tensor, target: int) -> float:
    """ASR: share of triggered images of other classes than `target` predicted as `target`."""
    other = y != target
    return float((pred_triggered[other] == target).float().mean())


def assess(net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
           train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
           trigger: Transform | None = None, target: int = 0, knn_k: int = 200,
           knn_temperature: float = 0.5) -> dict[str, float]:
    """Clean accuracy by kNN and by linear probes on clean train features (raw, and L2-normalised as in
    BadEncoder's downstream classifiers); with a trigger, each one's ASR on triggered test images of the
    other classes, and the CA and ASR of an L2 probe whose training set has POISON_SHARE of it
    (non-target images, seeded) triggered and relabelled to the target (`downstream_*`: DeDe Table 2's
    "poisoned downstream" setting)."""
    ytr, yte = torch.as_tensor(train[1]), torch.as_tensor(test[1])
    ftr = extract(net, train[0], mean, std, device)
    fte = extract(net, test[0], mean, std, device)
    probe, probe_l2 = LinearProbe().fit(ftr, ytr), LinearProbe(l2=True).fit(ftr, ytr)
    out = {"knn_ca": accuracy(knn_predict(ftr, ytr, fte, k=knn_k, temperature=knn_temperature), yte),
           "probe_ca": accuracy(probe.predict(fte), yte), "probe_l2_ca": accuracy(probe_l2.predict(fte), yte)}
    if trigger is not None:
        keep = test[1] != target
        fbd = extract(net, test[0][keep], mean, std, device, transform=trigger)
        out["probe_asr"] = attack_success(probe.predict(fbd), yte[keep], target)
        out["probe_l2_asr"] = attack_success(probe_l2.predict(fbd), yte[keep], target)
        out["knn_asr"] = attack_success(knn_predict(ftr, ytr, fbd, k=knn_k, temperature=knn_temperature),
                                        yte[keep], target)
        pick = poisoned_rows(train[1], target, np.random.default_rng(0))
        ftr, ytr = ftr.clone(), ytr.clone()
        ftr[pick] = extract(net, train[0][pick], mean, std, device, transform=trigger)
        ytr[pick] = target
        poisoned = LinearProbe(l2=True).fit(ftr, ytr)
        out["downstream_ca"] = accuracy(poisoned.predict(fte), yte)
        out["downstream_asr"] = attack_success(poisoned.predict(fbd), yte[keep], target)
    return {k: round(v, 4) for k, v in out.items()}
