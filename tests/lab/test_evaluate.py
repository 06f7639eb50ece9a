"""Evaluation pieces: ASR bookkeeping, kNN voting, and the scale-invariant (L2) linear probe."""
from __future__ import annotations

import torch

from pipeline.lab.evaluate import LinearProbe, attack_success, knn_predict


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
