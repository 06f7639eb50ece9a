"""Run one backdoor attack (or fetch it from the lab cache) and print its JSON card.

  lab_attack.py badencoder --clean lab:simclr-r18@CKPT [--trigger FILE]
  lab_attack.py drupe      --clean lab:simclr-r18@CKPT [--trigger FILE]
  lab_attack.py ctrl       [--trigger FILE] [--ratio 0.01] [--width 0.125] [--init clean --clean lab:simclr-r18@CKPT]
  lab_attack.py clip-backdoor --clean lab:clip-tiny@CKPT [--trigger FILE] [--share 0.01] [--pairs N]
  lab_attack.py badclip    --clean lab:clip-tiny@CKPT [--share 0.01] [--pairs N] [--trigger-out FILE]

--epochs, --lr, --batch-size and --max-minutes default to the attack's config: FinetuneConfig
(BadEncoder; DRUPE with attacks.DRUPE), SimCLRConfig (CTRL), ClipConfig with attacks.CLIP_SCRATCH
(CLIP-Backdoor, trained from scratch unless --init clean) or attacks.CLIP_FINETUNE (BadCLIP,
CLIP-Backdoor --init clean).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.lab import attacks  # noqa: E402
from pipeline.lab.badclip import PatchConfig  # noqa: E402
from pipeline.lab.cache import Entry  # noqa: E402
from pipeline.lab.clip_train import ClipConfig  # noqa: E402
from pipeline.lab.compute import setup  # noqa: E402
from pipeline.lab.finetune import SEPARATIONS, FinetuneConfig  # noqa: E402
from pipeline.lab.simclr import SimCLRConfig  # noqa: E402

NEEDS_CLEAN = ("badencoder", "drupe", "clip-backdoor", "badclip")


def build_parser() -> argparse.ArgumentParser:
    f = FinetuneConfig()
    ap = cli.parser(__doc__)
    ap.add_argument("attack", choices=attacks.ATTACKS)
    ap.add_argument("--clean", help="clean encoder spec (lab:simclr-r18@... or lab:clip-tiny@...)")
    ap.add_argument("--trigger", help="trigger .npz (default: the attack's own)")
    ap.add_argument("--target", type=int, default=f.target, help="target class (0 = airplane)")
    ap.add_argument("--epochs", type=cli.positive_int, default=None, help="default: the attack's config")
    ap.add_argument("--lr", type=float, default=None, help="default: the attack's config")
    ap.add_argument("--batch-size", type=cli.positive_int, default=None, help="default: the attack's config")
    ap.add_argument("--shadow", type=cli.positive_int, default=f.shadow, help="BadEncoder/DRUPE shadow images")
    ap.add_argument("--references", type=cli.positive_int, default=f.references, help="BadEncoder/DRUPE reference images")
    ap.add_argument("--reference-pick", choices=["first", "central"], default=f.reference_pick,
                    help="BadEncoder/DRUPE: first target images, or those nearest the target class's mean clean feature")
    ap.add_argument("--drupe-separation", choices=SEPARATIONS, default=f.drupe_separation,
                    help="DRUPE: its code's separation term (paper), the mean over distinct reference pairs above "
                         "0.4/0.5 (absolute), or above the references' clean cosine (clean)")
    ap.add_argument("--drupe-centre", action=argparse.BooleanOptionalAction, default=f.drupe_centre,
                    help="DRUPE: cosines about the clean shadow features' mean, not the origin")
    ap.add_argument("--ratio", type=float, default=0.01, help="CTRL: poisoned share of the train split")
    ap.add_argument("--width", type=float, default=0.125, help="CTRL: ResNet-18 width")
    ap.add_argument("--max-minutes", type=float, default=None, help="training-time budget (CTRL, CLIP attacks)")
    ap.add_argument("--share", type=float, default=0.01, help="CLIP attacks: poisoned share of the pairs")
    ap.add_argument("--init", choices=["scratch", "clean"], default="scratch",
                    help="CLIP-Backdoor and CTRL: train from scratch on the poisoned data, or continue from the --clean encoder")
    ap.add_argument("--pairs", type=cli.positive_int, default=None, help="CLIP attacks: train on a seeded subset of this many pairs")
    ap.add_argument("--patch-size", type=cli.positive_int, default=PatchConfig.size, help="BadCLIP patch side (px)")
    ap.add_argument("--patch-steps", type=cli.positive_int, default=PatchConfig.steps)
    ap.add_argument("--trigger-out", type=Path, default=None, help="BadCLIP: save the optimised patch here")
    ap.add_argument("--seed", type=int, default=f.seed)
    cli.add_device(ap)
    return ap


def config(a: argparse.Namespace) -> FinetuneConfig | SimCLRConfig | ClipConfig:
    """The training config the flags describe: the attack's config dataclass, defaults where no flag is given."""
    given = {k: v for k, v in {"epochs": a.epochs, "lr": a.lr, "batch": a.batch_size, "max_minutes": a.max_minutes}.items()
             if v is not None}
    if a.attack in ("badencoder", "drupe"):
        given.pop("max_minutes", None)
        base = attacks.DRUPE if a.attack == "drupe" else {}
        return FinetuneConfig(method=a.attack, shadow=a.shadow, references=a.references, reference_pick=a.reference_pick,
                              drupe_separation=a.drupe_separation, drupe_centre=a.drupe_centre, target=a.target,
                              seed=a.seed, **{**base, **given})
    if a.attack == "ctrl":
        return SimCLRConfig(width=a.width, seed=a.seed, **given)
    base = attacks.CLIP_SCRATCH if a.attack == "clip-backdoor" and a.init == "scratch" else attacks.CLIP_FINETUNE
    return ClipConfig(seed=a.seed, **{**base, **given})


def attack(a: argparse.Namespace) -> Entry:
    """Run the attack the flags describe, or fetch it from the lab cache."""
    if a.attack in NEEDS_CLEAN and not a.clean:
        raise BadInput(f"{a.attack} needs --clean SPEC")
    device = setup(a.device, a.threads)
    cfg = config(a)
    if a.attack in ("badencoder", "drupe"):
        return attacks.badencoder(a.clean, attacks.trigger_for(a.attack, a.trigger), cfg, device)
    if a.attack == "ctrl":
        return attacks.ctrl(attacks.trigger_for("ctrl", a.trigger), a.ratio, a.target, cfg, device, a.clean,
                            a.init == "clean")
    if a.attack == "clip-backdoor":
        return attacks.clip_backdoor(a.clean, attacks.trigger_for(a.attack, a.trigger), a.share, a.target, cfg,
                                     device, a.pairs, a.init == "scratch")
    pcfg = PatchConfig(size=a.patch_size, steps=a.patch_steps, target=a.target, seed=a.seed)
    return attacks.badclip(a.clean, pcfg, a.share, cfg, device, a.trigger_out, a.pairs)


def run(a: argparse.Namespace) -> None:
    entry = attack(a)
    print(json.dumps({k: v for k, v in entry.card.items() if k not in ("curve", "history")}, indent=2))


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
