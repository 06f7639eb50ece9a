"""Stage 1: the clean encoders, trained once per config and cached (SimCLR here, CLIP in clip_train)."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from pipeline.encoders import CIFAR_MEAN, CIFAR_STD
from pipeline.lab.cache import Entry, cached
from pipeline.lab.cifar import data_hash, load_split
from pipeline.lab.clip_train import ClipConfig, template_captions, train_clip, zero_shot
from pipeline.lab.encoders import CLIP_ENCODER, SIMCLR_ENCODER
from pipeline.lab.evaluate import assess
from pipeline.lab.simclr import SimCLRConfig, train_simclr


def clean_simclr(cfg: SimCLRConfig, device: torch.device, curve_out: Path | None = None) -> Entry:
    """Train (or fetch from the cache) a clean SimCLR encoder on CIFAR-10 train; card has kNN and probe CA."""
    train, test = load_split("train"), load_split("test")

    def run(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
        curve_path = folder / "curve.jsonl"
        curve_path.unlink(missing_ok=True)
        net, curve, minutes = train_simclr(cfg, *train, *test, device, curve_path)
        scores = assess(net.backbone, CIFAR_MEAN, CIFAR_STD, device, train, test,
                        knn_k=cfg.knn_k, knn_temperature=cfg.knn_temperature)
        return net.state_dict(), {"stage": "clean-simclr", "data_hash": data_hash(*train), "train_minutes": round(minutes, 2),
                                  "ca": scores["knn_ca"], **scores, "curve": curve}

    return _with_curve(cached(f"simclr-w{cfg.width}", SIMCLR_ENCODER, {"stage": "clean-simclr", **cfg.to_dict()}, run),
                       curve_out)


def clean_clip(cfg: ClipConfig, device: torch.device, curve_out: Path | None = None) -> Entry:
    """Train (or fetch from the cache) the small CLIP on CIFAR-10 train with template captions;
    the card has zero-shot accuracy on the test split."""
    train, test = load_split("train"), load_split("test")

    def run(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
        curve_path = folder / "curve.jsonl"
        curve_path.unlink(missing_ok=True)
        model, curve, minutes = train_clip(cfg, train[0], template_captions(train[1], cfg.seed), *test, device, curve_path=curve_path)
        scores = zero_shot(model, *test, device)
        return model.state_dict(), {"stage": "clean-clip", "data_hash": data_hash(*train), "train_minutes": round(minutes, 2),
                                    "ca": scores["zero_shot_ca"], **scores, "curve": curve}

    return _with_curve(cached("clip-tiny", CLIP_ENCODER, {"stage": "clean-clip", **cfg.to_dict()}, run), curve_out)


def _with_curve(entry: Entry, curve_out: Path | None) -> Entry:
    """Copy the entry's monitor curve to `curve_out` when asked."""
    if curve_out is not None and (entry.folder / "curve.jsonl").exists():
        curve_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.folder / "curve.jsonl", curve_out)
    return entry
