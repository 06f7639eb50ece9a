"""The demo: pack CIFAR-10, train a decoder for a small ResNet, score the test split with the Ray job."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ingest  # noqa: E402
import score_corpus  # noqa: E402
import train_decoder  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo", help="folder for shards, decoder and scores")
    ap.add_argument("--encoder", default="resnet:resnet18-cifar-w0.25", help="victim encoder spec")
    ap.add_argument("--aux-samples", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args(argv)
    steps = [
        lambda: ingest.main(["cifar10", "--split", "train", "--limit", str(a.aux_samples), "--out", f"{a.out}/aux"]),
        lambda: ingest.main(["cifar10", "--split", "test", "--out", f"{a.out}/corpus"]),
        lambda: train_decoder.main(["--encoder", a.encoder, "--data", f"{a.out}/aux", "--out", f"{a.out}/decoder",
                                    "--epochs", str(a.epochs), "--width", "128", "--patch-size", "8", "--encoder-depth", "2",
                                    "--decoder-depth", "2", "--heads", "4"]),
        lambda: score_corpus.main(["--decoder", f"{a.out}/decoder", "--input", f"{a.out}/corpus", "--out", f"{a.out}/run"]),
    ]
    for step in steps:
        rc = step()
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
