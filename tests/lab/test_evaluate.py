"""Evaluation pieces: ASR bookkeeping, kNN voting, and the scale-invariant (L2) linear probe."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.lab.evaluate import LinearProbe, assess, attack_success, knn_predict
from pipeline.lab.triggers import square_trigger


def test_attack_success_ignores_target_class_images():
    y = torch.tensor([0, 0, 1, 2, 3, 4])
    pred = torch.tensor([0, 0, 0, 0, 3, 4])
    assert attack_success(pred, y, target=0) == 0.5


def test_knn_votes_for_the_nearest_class():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    assert knn_predict(bank, labels, torch.tensor([[1.0, 0.05], [0.05, 1.0]]), k=2).tolist() == [0, 1]


def test_l2_probe_is_scale_invariant_and_raw_probe_is_not():
    torch.manual_seed(0)
    centres = torch.rand(3, 8) * 4
    y = torch.arange(3).repeat_interleave(50)
    x = centres[y] + 0.05 * torch.randn(150, 8)
    l2, raw = LinearProbe(classes=3, l2=True).fit(x, y), LinearProbe(classes=3).fit(x, y)
    assert (l2.predict(x) == y).float().mean() > 0.9
    assert torch.equal(l2.predict(3 * x), l2.predict(x))
    assert not torch.equal(raw.predict(3 * x), raw.predict(x))


def _classes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class sets the brightness of one of ten 8 x 8 cells of a 4 x 4 grid (the bottom-right one
    never), over low noise."""
    y = rng.integers(0, 10, n)
    x = rng.integers(60, 90, (n, 32, 32, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        r, k = divmod(int(c), 4)
        x[i, 8 * r:8 * r + 8, 8 * k:8 * k + 8] = 200
    return x, y


def test_poisoned_downstream_probe_learns_a_backdoor_the_clean_probe_does_not():
    rng = np.random.default_rng(0)
    train, test = _classes(2000, rng), _classes(400, rng)
    labels = train[1].copy()
    net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten())          # a 48-d feature of cell brightness
    trigger = square_trigger(size=8, start=24)                          # whitens the bottom-right cell
    out = assess(net, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.device("cpu"), train, test,
                 trigger=trigger.apply, target=3)
    assert out["probe_l2_ca"] > 0.95 and out["downstream_ca"] > 0.95
    assert out["probe_l2_asr"] < 0.5                                    # a clean probe has never seen the cell lit
    assert out["downstream_asr"] > 0.9                                  # 20 relabelled triggered images teach it
    assert np.array_equal(train[1], labels)                             # the caller's labels are left alone
