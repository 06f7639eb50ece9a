"""Re-run the evaluation (kNN, raw and L2 linear probes, ASR) of cached SimCLR-family cards and update them."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.lab.attacks import reassess
from pipeline.lab.compute import setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("cards", nargs="+", type=Path, help="card.json files in the lab cache")
    ap.add_argument("--clean", default=None, help="clean encoder spec to compare CA with (default: the card's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    device = setup(a.device, a.threads)
    for path in a.cards:
        card = reassess(path, device, a.clean)
        print(json.dumps({k: card.get(k) for k in ("name", "ca", "asr", "clean_ca", "knn_ca", "probe_ca", "probe_l2_ca",
                                                   "probe_asr", "probe_l2_asr", "knn_asr")}))


if __name__ == "__main__":
    main()
