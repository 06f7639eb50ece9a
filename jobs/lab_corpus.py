"""Write a poisoned WebDataset corpus from a CIFAR-10 split (.jpg, .txt for CLIP attacks, .json ground truth)
and its card (corpus.json: config, counts, share) beside the shards."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from pipeline.lab.attacks import trigger_for
from pipeline.lab.cifar import load_split
from pipeline.lab.corpus import write_corpus
from pipeline.lab.triggers import trigger_hash
from pipeline.storage import write_text_atomic

CLIP_ATTACKS = ("clip-backdoor", "badclip")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--attack", required=True, help="attack name recorded in the ground truth (ctrl: clean-label)")
    ap.add_argument("--trigger", help="trigger .npz (default: the attack's own; BadCLIP: its card's trigger.npz)")
    ap.add_argument("--split", choices=["train", "test"], default="test")
    ap.add_argument("--share", type=float, default=0.05, help="share of samples carrying the trigger")
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="a seeded subset of this many images")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--out", required=True, help="output folder or URL prefix")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    images, labels = load_split(a.split)
    if a.limit:
        idx = np.sort(np.random.default_rng(a.seed).permutation(len(images))[:a.limit])
        images, labels = images[idx], labels[idx]
    trigger = trigger_for(a.attack, a.trigger)
    summary = write_corpus(images, labels, trigger, a.attack, a.share, a.target, a.out,
                           prefix=f"cifar10-{a.split}-{a.attack}", shard_size=a.shard_size,
                           captions=a.attack in CLIP_ATTACKS, seed=a.seed)
    card = {"attack": a.attack, "split": a.split, "limit": a.limit, "target": a.target, "seed": a.seed,
            "trigger": trigger_hash(trigger), "shards": summary.shards, "samples": summary.samples,
            "poisoned": summary.poisoned, "share": round(summary.share, 4), "command": " ".join(sys.argv)}
    write_text_atomic(f"{a.out.rstrip('/')}/corpus.json", json.dumps(card, indent=2))
    print(json.dumps({**card, "shards": len(summary.shards)}, indent=2))


if __name__ == "__main__":
    main()
