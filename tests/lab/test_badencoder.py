"""A tiny BadEncoder / DRUPE run: the loss falls and triggered features move toward the references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.encoders import CIFAR_MEAN, CIFAR_STD
from pipeline.lab.finetune import FinetuneConfig, backdoor_finetune, separation, sliced_wasserstein
from pipeline.lab.triggers import Trigger, bar_trigger, blend_trigger, square_trigger
from pipeline.models.resnet_cifar import CifarResNet


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


def _run(method: str, epochs: int, trigger: Trigger | None = None, **kw) -> tuple[CifarResNet, list[dict[str, float]]]:
    torch.manual_seed(0)
    shadow, refs = _data()
    clean = CifarResNet("resnet18", 0.125)
    cfg = FinetuneConfig(**{"method": method, "epochs": epochs, "batch": 16, "lr": 0.05, "drupe_warmup_epochs": 0,
                            "drupe_full_from": 0, **kw})
    net, history, minutes = backdoor_finetune(clean, cfg, shadow, refs, trigger or square_trigger(), CIFAR_MEAN,
                                              CIFAR_STD, torch.device("cpu"))
    assert len(history) == epochs and minutes > 0
    return clean, history


def test_tiny_badencoder_run_loss_falls():
    clean, history = _run("badencoder", 4)
    assert history[-1]["loss"] < history[0]["loss"] - 0.005
    assert all(not p.requires_grad for p in clean.parameters())  # the clean encoder stays untouched


def test_tiny_drupe_run_reports_its_distribution_and_concentration_terms():
    _, history = _run("drupe", 1)
    h = history[0]
    assert {"sw", "sim_b2b", "std_refs", "l3"} <= set(h)
    assert h["sw"] > 0 and -1 <= h["sim_b2b"] <= 1 and h["std_refs"] >= 0


@pytest.mark.parametrize("trigger", [bar_trigger(), blend_trigger()], ids=["bar", "blend"])
def test_tiny_drupe_run_backdoor_loss_falls_on_a_trigger_other_than_the_default(trigger):
    _, history = _run("drupe", 4, trigger)
    assert history[-1]["l0"] < history[0]["l0"] - 0.005


def test_drupe_centre_measures_cosines_about_the_clean_mean_not_the_origin():
    _, raw = _run("drupe", 1, lr=0.0, drupe_centre=False)
    _, centred = _run("drupe", 1, lr=0.0, drupe_centre=True)
    assert raw[0]["l3"] > 0.9                    # ReLU features are non-negative: every pair points the same way
    assert centred[0]["l3"] < raw[0]["l3"] - 0.2
    assert raw[0]["l2"] == pytest.approx(-1, abs=1e-4) and centred[0]["l2"] == pytest.approx(-1, abs=1e-4)


def test_badencoder_config_leaves_out_drupe_only_fields():
    bad, drupe = FinetuneConfig(method="badencoder").to_dict(), FinetuneConfig(method="drupe").to_dict()
    assert not any(k.startswith("drupe_") or k == "sw_projections" for k in bad)
    assert set(drupe) - set(bad) == {"drupe_warmup_epochs", "drupe_full_from", "drupe_adapt_after", "drupe_cost_sw",
                                     "drupe_cost_conc", "drupe_separation", "drupe_centre", "sw_projections",
                                     "drupe_format"}
    assert FinetuneConfig(method="badencoder", drupe_separation="absolute").to_dict() == bad


def test_sliced_wasserstein_is_zero_for_equal_clouds_and_grows_with_shift():
    a = torch.randn(64, 8)
    assert float(sliced_wasserstein(a, a, 32)) < 1e-6
    assert float(sliced_wasserstein(a, a + 3, 32)) > float(sliced_wasserstein(a, a + 1, 32)) > 0.1


def test_drupe_separation_terms_by_mode():
    refs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]]), dim=1)
    c = (0.8 + 0.6 + 0.96) / 3                                       # mean cosine over distinct pairs
    paper = (3 + 3 * c) / 6                                          # DRUPE's code: pairs i <= j, the diagonal's ones too
    assert float(separation("paper", refs, 0.0, warmup=False)) == pytest.approx(paper)          # above 0.5: 1 x L3
    assert float(separation("paper", refs, 0.0, warmup=True)) == pytest.approx(0.5 * paper)
    apart = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [-1.0, 0.1], [0.0, 1.0]]), dim=1)
    assert float(separation("paper", apart, 0.0, warmup=False)) == 0.0                           # L3 below 0.4
    assert float(separation("absolute", refs, 0.0, warmup=False)) == pytest.approx(1.2 * c)     # above 0.4 and 0.5
    assert float(separation("clean", refs, c - 0.05, warmup=False)) == pytest.approx(0.2 * c)   # above c only
    assert float(separation("clean", refs, c + 0.01, warmup=True)) == 0.0
    with pytest.raises(ValueError, match="paper, absolute, clean"):
        separation("relative", refs, c, warmup=False)
