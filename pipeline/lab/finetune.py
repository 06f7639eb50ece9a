"""BadEncoder and DRUPE: fine-tune a copy of a clean encoder so triggered inputs embed like reference images.

Losses on L2-normalised features (f' trained, f frozen clean, BatchNorm frozen):
L0 = -cos(f'(x + t), f'(ref)) (and f'(aug(ref))), L1 = -cos(f'(aug(ref)), f(ref)), L2 = -cos(f'(x), f(x)).
DRUPE pulls each triggered sample to its most similar reference and adds a sliced-Wasserstein term
between triggered and clean embeddings plus concentration terms, on DRUPE's epoch schedule. Its
reference-separation term L3 (`separation`) is DRUPE's code ('paper': the mean cosine over reference pairs i <= j,
each reference with itself included, above 0.5 / 0.4), or the mean over pairs i < j above 0.4 / 0.5 ('absolute',
DEDE.md's reading), or above the references' own clean cosine c / c + 0.1 ('clean').
With `drupe_centre` (DRUPE's default here) every DRUPE cosine is taken about the mean clean feature of the
shadow set, not the origin: a thin encoder's non-negative (ReLU) features all lie within a narrow cone (clean
images of other classes at cosine 0.93 to the references in a DRUPE run), so about the origin DRUPE's loss is
met at cosine 0.96 while triggered images still read as their own class.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.lab.augment import SimCLRAugment
from pipeline.lab.compute import autocast, to_input
from pipeline.lab.evaluate import as_float01, extract
from pipeline.lab.triggers import Trigger


DRUPE_ONLY = ("drupe_", "sw_projections")
"""Prefixes of the fields only DRUPE reads: they are not part of a BadEncoder run's config (nor its hash)."""
DRUPE_FORMAT = 2
"""In a DRUPE run's config: bumped when its loss changes (2: the adaptive cost weighs std_refs too, as DRUPE's code)."""
SEPARATIONS = ("paper", "absolute", "clean")


@dataclass
class FinetuneConfig:
    """Everything that decides a BadEncoder/DRUPE run besides the clean encoder and trigger.

    Defaults (what each implants: results/encoders.md, its matrix): 12 epochs at DRUPE's lr 0.05, 10
    references nearest the target class's mean clean feature, and DRUPE's separation thresholds taken from
    the references' clean cosine."""

    method: str = "badencoder"
    epochs: int = 12
    batch: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    shadow: int = 5000
    references: int = 10
    reference_pick: str = "central"
    target: int = 0
    lambda1: float = 1.0
    lambda2: float = 1.0
    drupe_warmup_epochs: int = 1
    drupe_full_from: int = 5
    drupe_adapt_after: int = 20
    drupe_cost_sw: float = 1e-3
    drupe_cost_conc: float = 0.1
    drupe_separation: str = "clean"
    drupe_centre: bool = True
    sw_projections: int = 64
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields that decide a run of `method` (BadEncoder's leave out DRUPE's)."""
        out = asdict(self)
        if self.method == "drupe":
            return {**out, "drupe_format": DRUPE_FORMAT}
        return {k: v for k, v in out.items() if not k.startswith(DRUPE_ONLY)}


def freeze_batchnorm(net: nn.Module) -> None:
    """BatchNorm layers in eval mode with frozen affine parameters."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int) -> torch.Tensor:
    """Sliced 2-Wasserstein distance between two equal-size point clouds (N, D)."""
    theta = F.normalize(torch.randn(a.shape[1], projections, device=a.device), dim=0)
    pa, _ = torch.sort(a @ theta, dim=0)
    pb, _ = torch.sort(b @ theta, dim=0)
    return ((pa - pb) ** 2).mean().sqrt()


def mean_offdiag(sim: torch.Tensor) -> torch.Tensor:
    """Mean of the off-diagonal entries of a square similarity matrix."""
    n = sim.shape[0]
    return (sim.sum() - sim.diagonal().sum()) / max(1, n * (n - 1))


def backdoor_finetune(clean: nn.Module, cfg: FinetuneConfig, shadow: np.ndarray, refs: np.ndarray, trigger: Trigger,
                      mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                      channels_last: bool = True) -> tuple[nn.Module, list[dict[str, float]], float]:
    """Fine-tune a copy of `clean` (a backbone: normalised images -> features); returns the backdoored copy,
    per-epoch mean losses and the training minutes. `channels_last` False feeds contiguous batches."""
    torch.manual_seed(cfg.seed)
    student = copy.deepcopy(clean).to(device)
    clean = clean.to(device).eval().requires_grad_(False)
    student.train().requires_grad_(True)
    freeze_batchnorm(student)
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=cfg.lr,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    norm = lambda x: to_input((x - m) / s, device, channels_last)  # noqa: E731
    aug = SimCLRAugment(crop_scale=(0.2, 1.0))
    ref01 = as_float01(refs)
    origin = (extract(clean, shadow, mean, std, device).mean(0).to(device)
              if cfg.method == "drupe" and cfg.drupe_centre else torch.zeros((), device=device))
    unit = lambda z: F.normalize(z - origin, dim=1)  # noqa: E731
    with torch.no_grad():
        ref_clean = unit(clean(norm(ref01)).float())
    c_clean = float(mean_offdiag(ref_clean @ ref_clean.T)) if len(ref_clean) > 1 else 1.0
    data = torch.as_tensor(shadow)
    steps = len(shadow) // cfg.batch
    cost_sw, cost_conc = cfg.drupe_cost_sw, cfg.drupe_cost_conc
    history: list[dict[str, float]] = []
    trained = 0.0
    bar = tqdm(total=cfg.epochs * steps, desc=cfg.method, mininterval=10, disable=None)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(shadow))
        sums: dict[str, float] = {}
        for step in range(steps):
            t0 = time.time()
            x = as_float01(data[perm[step * cfg.batch:(step + 1) * cfg.batch]])
            xb = trigger.apply(x)
            n, r = len(x), len(ref01)
            with autocast(device):
                feats = student(norm(torch.cat([x, xb, ref01, aug(ref01)]))).float()
                with torch.no_grad():
                    clean_x = unit(clean(norm(x)).float())
            raw_x, raw_b = feats[:n], feats[n:2 * n]
            fx, fb = unit(raw_x), unit(raw_b)
            fr, fra = unit(feats[2 * n:2 * n + r]), unit(feats[2 * n + r:])
            sim_ref = fb @ fr.T                                      # (n, refs)
            l1 = -(fra * ref_clean).sum(1).mean()
            l2 = -(fx * clean_x).sum(1).mean()
            if cfg.method == "badencoder":
                l0 = -(sim_ref.mean() + (fb @ fra.T).mean()) / 2
                loss = l0 + cfg.lambda1 * l1 + cfg.lambda2 * l2
                terms = {"l0": l0, "l1": l1, "l2": l2}
            else:
                l0 = -sim_ref.max(1).values.mean()
                std_refs = sim_ref.mean(0).std() if r > 1 else torch.zeros(())
                sim_b2b = mean_offdiag(fb @ fb.T)
                l3 = mean_offdiag(fr @ fr.T) if r > 1 else torch.zeros(())
                warmup = epoch < cfg.drupe_warmup_epochs
                sep = separation(cfg.drupe_separation, fr, c_clean, warmup)
                sw = sliced_wasserstein(raw_b, raw_x, cfg.sw_projections) / (raw_x.std(0).mean() + 1e-8)
                if warmup:
                    loss = l1 + l2 + sep
                elif epoch < cfg.drupe_full_from:
                    loss = l0 + l1 + l2 + 2 * std_refs + sep
                else:
                    conc = 0.5 * std_refs + (1.5 * std_refs if std_refs > 0.1 else 0)
                    loss = l0 + l1 + l2 + cost_sw * sw + cost_conc * (sim_b2b + std_refs) + conc + sep
                terms = {"l0": l0, "l1": l1, "l2": l2, "sw": sw, "sim_b2b": sim_b2b, "std_refs": std_refs, "l3": l3}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            trained += time.time() - t0
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", l0=f"{l0.item():.3f}", refresh=False)
        history.append({"epoch": epoch, **{k: round(v / steps, 4) for k, v in sums.items()}})
        if cfg.method == "drupe" and epoch >= cfg.drupe_adapt_after:
            h = history[-1]
            good = h["l0"] < -0.96 and h["l1"] < -0.9 and h["l2"] < -0.9
            cost_conc = cost_conc * 1.25 if good else cost_conc / 1.25 ** 1.25
            cost_sw = cost_sw * 1.25 if good and h["sim_b2b"] < 0.6 else cost_sw / 1.25 ** 1.25
    bar.close()
    student.eval()
    return student, history, trained / 60


def separation(mode: str, refs: torch.Tensor, clean_cosine: float, warmup: bool) -> torch.Tensor:
    """DRUPE's reference-separation loss on the references' normalised features (r, D); `clean_cosine` is their
    mean pairwise cosine in the clean encoder ('clean' mode's thresholds). Warm-up: 0.5 x L3 ('paper' less 0.2 x L3
    below 0.2; 'clean' its usual rule)."""
    if mode not in SEPARATIONS:
        raise ValueError(f"unknown drupe_separation {mode!r}: {', '.join(SEPARATIONS)}")
    r = len(refs)
    if r < 2:
        return torch.zeros((), device=refs.device)
    sim = refs @ refs.T
    if mode == "paper":
        l3 = sim.triu().sum() / (r * (r + 1) / 2)                    # DRUPE main.py: pairs i <= j
        if warmup:
            return 0.5 * l3 - (0.2 * l3 if l3 < 0.2 else 0)
        return l3 if l3 > 0.5 else 0.2 * l3 if l3 > 0.4 else torch.zeros_like(l3)
    l3 = mean_offdiag(sim)
    if warmup and mode == "absolute":
        return 0.5 * l3
    low, high = (0.4, 0.5) if mode == "absolute" else (clean_cosine, clean_cosine + 0.1)
    return (l3 if l3 > high else 0) + (0.2 * l3 if l3 > low else 0) + torch.zeros_like(l3)


def pick_shadow_and_refs(images: np.ndarray, labels: np.ndarray, cfg: FinetuneConfig, clean: nn.Module,
                         mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
                         ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shadow subset of the train split and `references` target-class images outside it: the first
    ones ('first'), or those whose clean features lie nearest the mean feature of 500 of them ('central')."""
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(images))
    rest = order[cfg.shadow:]
    pool = images[rest[labels[rest] == cfg.target][:500]]
    if cfg.reference_pick == "first":
        refs = pool[:cfg.references]
    elif cfg.reference_pick == "central":
        f = F.normalize(extract(clean, pool, mean, std, device), dim=1)
        refs = pool[(f @ F.normalize(f.mean(0), dim=0)).topk(cfg.references).indices.numpy()]
    else:
        raise ValueError(f"unknown reference_pick {cfg.reference_pick!r}: first or central")
    return images[order[:cfg.shadow]], refs
