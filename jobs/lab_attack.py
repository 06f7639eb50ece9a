"""Run one backdoor attack (or fetch it from the lab cache) and print its JSON card.

  lab_attack.py badencoder --clean lab:simclr-r18@CKPT [--trigger FILE]
  lab_attack.py drupe      --clean lab:simclr-r18@CKPT [--trigger FILE]
  lab_attack.py ctrl       [--trigger FILE] [--ratio 0.01] [--width 0.125]
  lab_attack.py clip-backdoor --clean lab:clip-tiny@CKPT [--trigger FILE] [--share 0.01] [--pairs N]
  lab_attack.py badclip    --clean lab:clip-tiny@CKPT [--share 0.01] [--pairs N] [--trigger-out FILE]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.lab import attacks
from pipeline.lab.badclip import PatchConfig
from pipeline.lab.clip_train import ClipConfig
from pipeline.lab.compute import setup
from pipeline.lab.finetune import FinetuneConfig
from pipeline.lab.simclr import SimCLRConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("attack", choices=["badencoder", "drupe", "ctrl", "clip-backdoor", "badclip"])
    ap.add_argument("--clean", help="clean encoder spec (lab:simclr-r18@... or lab:clip-tiny@...)")
    ap.add_argument("--trigger", help="trigger .npz (default: the attack's own)")
    ap.add_argument("--target", type=int, default=0, help="target class (0 = airplane)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--shadow", type=int, default=FinetuneConfig.shadow, help="BadEncoder/DRUPE shadow images")
    ap.add_argument("--references", type=int, default=FinetuneConfig.references, help="BadEncoder/DRUPE reference images")
    ap.add_argument("--reference-pick", choices=["first", "central"], default=FinetuneConfig.reference_pick,
                    help="BadEncoder/DRUPE: first target images, or those nearest the target class's mean clean feature")
    ap.add_argument("--drupe-separation", choices=["absolute", "clean"], default=FinetuneConfig.drupe_separation,
                    help="DRUPE: separation thresholds 0.4/0.5 (DRUPE's), or from the references' clean cosine")
    ap.add_argument("--ratio", type=float, default=0.01, help="CTRL: poisoned share of the train split")
    ap.add_argument("--width", type=float, default=0.125, help="CTRL: ResNet-18 width")
    ap.add_argument("--max-minutes", type=float, default=None, help="training-time budget (CTRL, CLIP attacks)")
    ap.add_argument("--share", type=float, default=0.01, help="CLIP attacks: poisoned share of the pairs")
    ap.add_argument("--pairs", type=int, default=None, help="CLIP attacks: train on a seeded subset of this many pairs")
    ap.add_argument("--patch-size", type=int, default=PatchConfig.size, help="BadCLIP patch side (px)")
    ap.add_argument("--patch-steps", type=int, default=PatchConfig.steps)
    ap.add_argument("--trigger-out", type=Path, default=None, help="BadCLIP: save the optimised patch here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args()
    device = setup(a.device, a.threads)
    given = {k: v for k, v in {"epochs": a.epochs, "lr": a.lr, "batch": a.batch, "max_minutes": a.max_minutes}.items()
             if v is not None}
    if a.attack in ("badencoder", "drupe", "clip-backdoor", "badclip") and not a.clean:
        ap.error(f"{a.attack} needs --clean SPEC")
    if a.attack in ("badencoder", "drupe"):
        given.pop("max_minutes", None)
        cfg = FinetuneConfig(method=a.attack, shadow=a.shadow, references=a.references, reference_pick=a.reference_pick,
                             drupe_separation=a.drupe_separation,
                             target=a.target, seed=a.seed, **given)
        entry = attacks.badencoder(a.clean, attacks.trigger_for(a.attack, a.trigger), cfg, device)
    elif a.attack == "ctrl":
        cfg = SimCLRConfig(width=a.width, seed=a.seed, **given)
        entry = attacks.ctrl(attacks.trigger_for("ctrl", a.trigger), a.ratio, a.target, cfg, device, a.clean)
    else:
        cfg = ClipConfig(seed=a.seed, **{"epochs": 2, "lr": 1e-4, "warmup_steps": 20, **given})
        if a.attack == "clip-backdoor":
            entry = attacks.clip_backdoor(a.clean, attacks.trigger_for(a.attack, a.trigger), a.share, a.target, cfg, device, a.pairs)
        else:
            pcfg = PatchConfig(size=a.patch_size, steps=a.patch_steps, target=a.target, seed=a.seed)
            entry = attacks.badclip(a.clean, pcfg, a.share, cfg, device, a.trigger_out, a.pairs)
    print(json.dumps({k: v for k, v in entry.card.items() if k not in ("curve", "history")}, indent=2))


if __name__ == "__main__":
    main()
