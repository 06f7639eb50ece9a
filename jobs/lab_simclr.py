"""Train (or fetch from the lab cache) a clean SimCLR CIFAR ResNet-18; prints its JSON card."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.lab.clean import clean_simclr
from pipeline.lab.compute import setup
from pipeline.lab.simclr import SimCLRConfig


def main() -> None:
    d = SimCLRConfig()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=float, default=d.width, help="ResNet-18 width multiplier")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--max-minutes", type=float, default=d.max_minutes, help="training-time budget")
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--schedule", choices=["cosine", "constant"], default=d.schedule,
                    help="learning rate: cosine decay to 0 over the epoch or time budget, or constant")
    ap.add_argument("--monitor-every", type=float, default=d.monitor_every_minutes, help="minutes between kNN logs")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--curve-out", type=Path, default=None, help="copy the kNN-vs-minutes log here (jsonl)")
    a = ap.parse_args()
    cfg = SimCLRConfig(width=a.width, epochs=a.epochs, max_minutes=a.max_minutes, batch=a.batch, lr=a.lr, schedule=a.schedule,
                       monitor_every_minutes=a.monitor_every, seed=a.seed)
    entry = clean_simclr(cfg, setup(a.device, a.threads), a.curve_out)
    print(json.dumps({k: v for k, v in entry.card.items() if k != "curve"}, indent=2))


if __name__ == "__main__":
    main()
