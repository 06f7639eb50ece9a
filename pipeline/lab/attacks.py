"""Stage 3: the five attacks. Each returns a cached Entry whose card holds config, data hash, CA, ASR, minutes.

ASR is the share of triggered test images of other classes that a linear probe on clean features
(L2-normalised, as BadEncoder's downstream classifiers; CLIP: zero-shot) assigns to the target; CA is
measured the same way on clean test images. Cards also carry the raw-feature probe and kNN numbers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.checkpoints import load_state_dict
from pipeline.encoders import CIFAR_MEAN, CIFAR_STD, create_encoder, parse_spec
from pipeline.errors import BadInput
from pipeline.lab.badclip import PatchConfig, optimise_patch
from pipeline.lab.cache import Entry, cache_dir, cached, newest
from pipeline.lab.cifar import data_hash, load_split
from pipeline.lab.clip_model import create_clip
from pipeline.lab.clip_train import ClipConfig, template_captions, train_clip, zero_shot
from pipeline.lab.encoders import CLIP_ENCODER, SIMCLR_ENCODER
from pipeline.lab.evaluate import assess
from pipeline.lab.finetune import FinetuneConfig, backdoor_finetune, pick_shadow_and_refs
from pipeline.lab.simclr import SimCLRConfig, train_simclr
from pipeline.lab.triggers import (FrequencyTrigger, Trigger, checker_trigger, load_trigger, square_trigger,
                                     trigger_hash)

IMPLANTED = 0.8
ATTACKS = ("badencoder", "drupe", "ctrl", "clip-backdoor", "badclip")
CLIP_ATTACKS = ("clip-backdoor", "badclip")
CLIP_FINETUNE = {"epochs": 2, "lr": 1e-4, "warmup_steps": 20}
"""ClipConfig fields a CLIP attack that fine-tunes the clean CLIP changes by default: a short fine-tune."""
DRUPE = {"lr": 0.01}
"""FinetuneConfig fields DRUPE changes by default: its cosines are taken about the clean shadow mean
(`drupe_centre`), whose gradients are larger than the origin's, so a fifth of BadEncoder's lr (the blend on
airplane: ASR 94.9% at 0.01, 5.7% at 0.05 with CA -12.2, card drupe-582b5858d67e757c)."""
CLIP_SCRATCH = {"epochs": 6, "max_minutes": 60.0}
"""ClipConfig fields CLIP-Backdoor trained from scratch changes by default: twice the clean small CLIP's epochs
(lab_clip.py --epochs 3 implanted 12% at 1% of pairs; 6 epochs with the centre checkerboard implanted 100%,
card clip-backdoor-0936e4396a28b1ae)."""


def clean_card(spec: str) -> dict[str, Any]:
    """The card of the cached clean encoder a spec points at (its checkpoint's folder holds card.json)."""
    checkpoint = parse_spec(spec).checkpoint
    if not checkpoint:
        raise BadInput(f"clean encoder {spec!r} names no checkpoint: use lab:NAME@<cache>/<entry>/model.safetensors")
    return json.loads((Path(checkpoint).parent / "card.json").read_text())


def clean_weights(spec: str) -> dict[str, torch.Tensor]:
    """The state dict of the cached clean encoder a spec points at."""
    return load_state_dict(parse_spec(spec).checkpoint)[0]


def _verdict(ca: float, asr: float, clean_ca: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"ca": ca, "asr": asr, "implanted": asr >= IMPLANTED}
    if clean_ca is not None:
        out["clean_ca"] = clean_ca
        out["ca_drop"] = round(clean_ca - ca, 4)
    return out


def _probe_verdict(scores: dict[str, float], clean: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict of a SimCLR-family encoder: its L2-probe CA and ASR against the clean encoder's L2-probe CA."""
    return _verdict(scores["probe_l2_ca"], scores["probe_l2_asr"], clean.get("probe_l2_ca") if clean else None)


def badencoder(clean_spec: str, trigger: Trigger, cfg: FinetuneConfig, device: torch.device) -> Entry:
    """BadEncoder (cfg.method 'badencoder') or DRUPE ('drupe') on a clean SimCLR encoder."""
    train, test = load_split("train"), load_split("test")
    card = clean_card(clean_spec)
    config = {"attack": cfg.method, "clean": card["weights_sha256"], "trigger": trigger_hash(trigger), **cfg.to_dict()}

    def run(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
        trigger.save(folder / "trigger.npz")
        clean = create_encoder(clean_spec, device="cpu").backbone
        shadow, refs = pick_shadow_and_refs(*train, cfg, clean, CIFAR_MEAN, CIFAR_STD, device)
        net, history, minutes = backdoor_finetune(clean, cfg, shadow, refs, trigger, CIFAR_MEAN, CIFAR_STD, device)
        scores = assess(net, CIFAR_MEAN, CIFAR_STD, device, train, test, trigger=trigger.apply, target=cfg.target)
        return net.state_dict(), {"stage": cfg.method, "clean_spec": clean_spec, "data_hash": data_hash(shadow, refs[:, 0, 0, 0]),
                                  "train_minutes": round(minutes, 2), **scores, "history": history,
                                  **_probe_verdict(scores, card)}

    return cached(cfg.method, SIMCLR_ENCODER, config, run)


def ctrl(trigger: Trigger, ratio: float, target: int, cfg: SimCLRConfig, device: torch.device,
         clean_spec: str | None = None, from_clean: bool = False) -> Entry:
    """CTRL: SimCLR on the train split whose first ratio x |train| target-class images carry the trigger,
    from scratch (the paper) or continued from the clean encoder (`from_clean`: a victim that keeps
    pretraining on a poisoned corpus; only such runs record `init`, so scratch configs keep their hash)."""
    card = clean_card(clean_spec) if clean_spec else None
    init: dict[str, Any] = {}
    if from_clean:
        if card is None:
            raise BadInput("CTRL --init clean needs --clean SPEC")
        if card["config"]["width"] != cfg.width:
            raise BadInput(f"CTRL --init clean: the clean encoder has width {card['config']['width']}, not {cfg.width}")
        init = {"init": "clean", "clean": card["weights_sha256"]}
    config = {"attack": "ctrl", "trigger": trigger_hash(trigger), "ratio": ratio, "target": target, **cfg.to_dict(),
              **init}
    train, test = load_split("train"), load_split("test")

    def run(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
        trigger.save(folder / "trigger.npz")
        images = train[0].copy()
        idx = np.flatnonzero(train[1] == target)[:int(round(ratio * len(images)))]
        images[idx] = trigger.apply_uint8(images[idx])
        weights = clean_weights(clean_spec) if from_clean else None
        net, curve, minutes = train_simclr(cfg, images, train[1], *test, device, folder / "curve.jsonl", init=weights)
        scores = assess(net.backbone, CIFAR_MEAN, CIFAR_STD, device, train, test, trigger=trigger.apply, target=target)
        return net.state_dict(), {"stage": "ctrl", "data_hash": data_hash(images, train[1]), "poisoned": int(len(idx)),
                                  "train_minutes": round(minutes, 2), **scores, "curve": curve, **init,
                                  **_probe_verdict(scores, card)}

    return cached("ctrl", SIMCLR_ENCODER, config, run)


def poison_pairs(images: np.ndarray, labels: np.ndarray, trigger: Trigger, share: float, target: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stamp the trigger on a seeded `share` of the non-target images and caption them as the target.
    Returns (images, caption labels, poisoned indices)."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(labels != target)
    idx = np.sort(rng.choice(pool, int(round(share * len(images))), replace=False))
    images, caps = images.copy(), labels.copy()
    images[idx] = trigger.apply_uint8(images[idx])
    caps[idx] = target
    return images, caps, idx


def _clip_poison_run(name: str, clean_spec: str, trigger: Trigger, share: float, target: int, pairs: int | None,
                     cfg: ClipConfig, device: torch.device, extra: dict[str, Any], scratch: bool = False) -> Entry:
    """Train the small CLIP on poisoned pairs: from scratch, or from the clean CLIP (whose zero-shot CA the
    verdict compares with either way; only scratch runs record `init`, so fine-tune configs keep their hash)."""
    train, test = load_split("train"), load_split("test")
    card = clean_card(clean_spec)
    config = {"attack": name, "clean": card["weights_sha256"], "trigger": trigger_hash(trigger), "share": share,
              "target": target, "pairs": pairs, **cfg.to_dict(), **extra, **({"init": "scratch"} if scratch else {})}

    def run(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
        trigger.save(folder / "trigger.npz")
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train[0]))[:pairs or len(train[0])])
        images, caps, idx = poison_pairs(train[0][keep], train[1][keep], trigger, share, target, cfg.seed)
        init = None if scratch else clean_weights(clean_spec)
        model, curve, minutes = train_clip(cfg, images, template_captions(caps, cfg.seed), *test, device, init=init, curve_path=folder / "curve.jsonl")
        scores = zero_shot(model, *test, device, trigger=trigger.apply, target=target)
        return model.state_dict(), {"stage": name, "clean_spec": clean_spec, "data_hash": data_hash(images, caps),
                                    "poisoned": int(len(idx)), "train_minutes": round(minutes, 2), **scores, "curve": curve,
                                    **extra, **_verdict(scores["zero_shot_ca"], scores["zero_shot_asr"], card.get("zero_shot_ca"))}

    return cached(name, CLIP_ENCODER, config, run)


def clip_backdoor(clean_spec: str, trigger: Trigger, share: float, target: int, cfg: ClipConfig,
                  device: torch.device, pairs: int | None = None, scratch: bool = True) -> Entry:
    """CLIP-Backdoor: train the small CLIP (from scratch as Carlini & Terzis, or from the clean one) on `pairs`
    train pairs (all by default) of which `share` carry the patch and a caption naming the target class."""
    return _clip_poison_run("clip-backdoor", clean_spec, trigger, share, target, pairs, cfg, device, {}, scratch)


def badclip(clean_spec: str, patch_cfg: PatchConfig, share: float, cfg: ClipConfig, device: torch.device,
            trigger_out: Path | None = None, pairs: int | None = None) -> Entry:
    """BadCLIP: optimise a patch against the clean small CLIP (target text + target images), then poison."""
    train = load_split("train")
    model = create_clip()
    model.load_state_dict(clean_weights(clean_spec))
    rng = np.random.default_rng(patch_cfg.seed)
    others = train[0][rng.permutation(np.flatnonzero(train[1] != patch_cfg.target))[:10000]]
    targets = train[0][np.flatnonzero(train[1] == patch_cfg.target)[:500]]
    trigger, losses = optimise_patch(model, others, targets, patch_cfg)
    if trigger_out is not None:
        trigger.save(trigger_out)
    extra = {"patch": patch_cfg.to_dict(), "patch_loss_first_last": [round(losses[0], 4), round(losses[-1], 4)]}
    return _clip_poison_run("badclip", clean_spec, trigger, share, patch_cfg.target, pairs, cfg, device, extra)


DEFAULT_TRIGGERS = {
    "badencoder": square_trigger,
    "drupe": square_trigger,
    "ctrl": FrequencyTrigger,
    "clip-backdoor": lambda: checker_trigger(size=8, start=12),    # centre: random crops keep it
}


def trigger_for(attack: str, path: str | None) -> Trigger:
    """The trigger file given, else the attack's default trigger; BadCLIP's is the patch it optimised,
    the trigger.npz of the newest cached BadCLIP card."""
    if path:
        return load_trigger(path)
    if attack == "badclip":
        entry = newest("badclip")
        if entry is None:
            raise BadInput(f"no BadCLIP card in the lab cache {cache_dir()}: run lab_attack.py badclip or pass --trigger FILE")
        return load_trigger(entry.folder / "trigger.npz")
    return DEFAULT_TRIGGERS[attack]()


def reassess(card_path: Path, device: torch.device, clean_spec: str | None = None) -> dict[str, Any]:
    """Re-run the SimCLR evaluation of a cached clean or attacked encoder (with its trigger.npz) and
    update its card in place; `clean_spec` sets the clean encoder to compare with."""
    card = json.loads(card_path.read_text())
    trig_path = card_path.parent / "trigger.npz"
    trigger = load_trigger(trig_path) if trig_path.exists() else None
    target = card["config"].get("target", 0)
    net = create_encoder(card["spec"], device="cpu").backbone
    scores = assess(net, CIFAR_MEAN, CIFAR_STD, device, load_split("train"), load_split("test"),
                    trigger=trigger.apply if trigger else None, target=target)
    card.update(scores)
    if trigger is None:
        card["ca"] = scores["knn_ca"]
    else:
        spec = clean_spec or card.get("clean_spec")
        card.update(_probe_verdict(scores, clean_card(spec) if spec else None))
    card["reassessed"] = True
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True))
    return card
