"""Write a poisoned WebDataset corpus from a CIFAR-10 split (.jpg, .txt for CLIP attacks, .json ground truth)
and its card (corpus.json: config, counts, share) beside the shards.

  lab_corpus.py badencoder --out corpora/badenc [--share 0.05] [--trigger FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pipeline import cli  # noqa: E402
from pipeline.corpus.cifar import SPLITS  # noqa: E402
from pipeline.lab.attacks import ATTACKS, CLIP_ATTACKS, trigger_for  # noqa: E402
from pipeline.lab.cifar import load_split  # noqa: E402
from pipeline.lab.corpus import write_corpus  # noqa: E402
from pipeline.lab.triggers import trigger_hash  # noqa: E402
from pipeline.storage import write_text_atomic  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("attack", choices=ATTACKS, help="attack recorded in the ground truth (ctrl: clean-label)")
    ap.add_argument("--trigger", help="trigger .npz (default: the attack's own; BadCLIP: the trigger.npz of the newest cached BadCLIP card)")
    ap.add_argument("--split", choices=SPLITS, default="test")
    ap.add_argument("--share", type=float, default=0.05, help="share of samples carrying the trigger")
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--limit", type=cli.positive_int, default=None, help="a seeded subset of this many images")
    ap.add_argument("--shard-size", type=cli.positive_int, default=1000)
    ap.add_argument("--out", required=True, help="output folder or URL prefix")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def run(a: argparse.Namespace) -> None:
    trigger = trigger_for(a.attack, a.trigger)
    images, labels = load_split(a.split)
    if a.limit:
        idx = np.sort(np.random.default_rng(a.seed).permutation(len(images))[:a.limit])
        images, labels = images[idx], labels[idx]
    summary = write_corpus(images, labels, trigger, a.attack, a.share, a.target, a.out,
                           prefix=f"cifar10-{a.split}-{a.attack}", shard_size=a.shard_size,
                           captions=a.attack in CLIP_ATTACKS, seed=a.seed)
    card = {"attack": a.attack, "split": a.split, "limit": a.limit, "target": a.target, "seed": a.seed,
            "trigger": trigger_hash(trigger), "shards": summary.shards, "samples": summary.samples,
            "poisoned": summary.poisoned, "share": round(summary.share, 4), "command": " ".join(sys.argv)}
    write_text_atomic(f"{a.out.rstrip('/')}/corpus.json", json.dumps(card, indent=2))
    print(json.dumps({**card, "shards": len(summary.shards)}, indent=2))


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
