"""Re-run the evaluation (kNN, raw and L2 linear probes, ASR) of cached SimCLR-family cards and update them."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.lab.attacks import reassess  # noqa: E402
from pipeline.lab.compute import setup  # noqa: E402

SHOWN = ("name", "ca", "asr", "clean_ca", "knn_ca", "probe_ca", "probe_l2_ca", "probe_asr", "probe_l2_asr", "knn_asr")


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("cards", nargs="+", type=Path, help="card.json files in the lab cache")
    ap.add_argument("--clean", default=None, help="clean encoder spec to compare CA with (default: the card's)")
    cli.add_device(ap)
    return ap


def run(a: argparse.Namespace) -> None:
    device = setup(a.device, a.threads)
    for path in a.cards:
        card = reassess(path, device, a.clean)
        print(json.dumps({k: card.get(k) for k in SHOWN}))


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
