"""Train (or fetch from the lab cache) the small clean CLIP on CIFAR-10 template captions; prints its card."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.lab.clean import clean_clip
from pipeline.lab.clip_train import ClipConfig
from pipeline.lab.compute import setup


def main() -> None:
    d = ClipConfig()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=d.epochs, help="epochs of the cosine schedule")
    ap.add_argument("--max-minutes", type=float, default=d.max_minutes, help="training-time budget")
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--monitor-every", type=float, default=d.monitor_every_minutes, help="minutes between zero-shot logs")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--curve-out", type=Path, default=None, help="copy the zero-shot-vs-minutes log here (jsonl)")
    a = ap.parse_args()
    cfg = ClipConfig(epochs=a.epochs, max_minutes=a.max_minutes, batch=a.batch, lr=a.lr,
                     monitor_every_minutes=a.monitor_every, seed=a.seed)
    entry = clean_clip(cfg, setup(a.device, a.threads), a.curve_out)
    print(json.dumps({k: v for k, v in entry.card.items() if k != "curve"}, indent=2))


if __name__ == "__main__":
    main()
