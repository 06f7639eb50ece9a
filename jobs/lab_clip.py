"""Train (or fetch from the lab cache) the small clean CLIP on CIFAR-10 template captions; prints its card."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.lab.clean import clean_clip  # noqa: E402
from pipeline.lab.clip_train import ClipConfig  # noqa: E402
from pipeline.lab.compute import setup  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    d = ClipConfig()
    ap = cli.parser(__doc__)
    ap.add_argument("--epochs", type=cli.positive_int, default=d.epochs, help="epochs of the cosine schedule")
    ap.add_argument("--max-minutes", type=float, default=d.max_minutes, help="training-time budget")
    ap.add_argument("--batch-size", type=cli.positive_int, default=d.batch)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--monitor-every", type=float, default=d.monitor_every_minutes, help="minutes between zero-shot logs")
    ap.add_argument("--seed", type=int, default=d.seed)
    cli.add_device(ap)
    ap.add_argument("--curve-out", type=Path, default=None, help="copy the zero-shot-vs-minutes log here (jsonl)")
    return ap


def run(a: argparse.Namespace) -> None:
    device = setup(a.device, a.threads)
    cfg = ClipConfig(epochs=a.epochs, max_minutes=a.max_minutes, batch=a.batch_size, lr=a.lr,
                     monitor_every_minutes=a.monitor_every, seed=a.seed)
    entry = clean_clip(cfg, device, a.curve_out)
    print(json.dumps({k: v for k, v in entry.card.items() if k != "curve"}, indent=2))


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
