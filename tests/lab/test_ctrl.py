"""CTRL continued from a clean encoder: train_simclr starts from the given weights, and misuse is one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.errors import BadInput
from pipeline.lab import attacks
from pipeline.lab.simclr import SimCLRConfig, SimCLRNet, train_simclr
from pipeline.lab.triggers import FrequencyTrigger


def _tiny(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def _conv_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if k.endswith("conv1.weight")}


def test_train_simclr_continues_from_the_given_weights():
    images, labels = _tiny()
    cfg = SimCLRConfig(width=0.0625, epochs=1, batch=32, lr=0.0, monitor_bank=32, monitor_test=16, knn_k=5)
    torch.manual_seed(123)
    start = SimCLRNet(cfg.width)
    cont, _, _ = train_simclr(cfg, images, labels, images[:16], labels[:16], torch.device("cpu"),
                              init=start.state_dict())
    fresh, _, _ = train_simclr(cfg, images, labels, images[:16], labels[:16], torch.device("cpu"))
    want, got, other = _conv_weights(start), _conv_weights(cont), _conv_weights(fresh)
    assert want and all(torch.equal(want[k], got[k].contiguous()) for k in want)
    assert not all(torch.equal(want[k], other[k].contiguous()) for k in want)


def test_ctrl_from_clean_needs_a_clean_encoder_of_its_width(tmp_path):
    st = tmp_path / "model.safetensors"
    save_file(SimCLRNet(0.25).state_dict(), str(st))
    (tmp_path / "card.json").write_text(json.dumps({"config": {"width": 0.25}, "weights_sha256": "x"}))
    cfg = SimCLRConfig(width=0.125)
    with pytest.raises(BadInput, match="needs --clean"):
        attacks.ctrl(FrequencyTrigger(), 0.01, 0, cfg, torch.device("cpu"), None, from_clean=True)
    with pytest.raises(BadInput, match="width 0.25, not 0.125") as e:
        attacks.ctrl(FrequencyTrigger(), 0.01, 0, cfg, torch.device("cpu"), f"lab:simclr-r18@{st}", from_clean=True)
    assert "\n" not in str(e.value)
