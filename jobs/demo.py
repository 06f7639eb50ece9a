"""The demo: pack CIFAR-10, train a decoder for a small ResNet, score the test split with the Ray job."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ingest  # noqa: E402
import score_corpus  # noqa: E402
import train_decoder  # noqa: E402

from pipeline import cli  # noqa: E402
from pipeline.dede.model import PRESETS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--out", default="demo", help="folder for shards, decoder and scores")
    ap.add_argument("--encoder", default="resnet:resnet18-cifar-w0.25", help="victim encoder spec")
    ap.add_argument("--aux-samples", type=cli.positive_int, default=5000)
    ap.add_argument("--epochs", type=cli.positive_int, default=2)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small", help="decoder size (default small)")
    return ap


def run(a: argparse.Namespace) -> int:
    steps = [
        lambda: ingest.main(["cifar10", "--split", "train", "--limit", str(a.aux_samples), "--out", f"{a.out}/aux"]),
        lambda: ingest.main(["cifar10", "--split", "test", "--out", f"{a.out}/corpus"]),
        lambda: train_decoder.main(["--encoder", a.encoder, "--data", f"{a.out}/aux", "--out", f"{a.out}/decoder",
                                    "--epochs", str(a.epochs), "--preset", a.preset]),
        lambda: score_corpus.main(["--decoder", f"{a.out}/decoder", "--input", f"{a.out}/corpus", "--out", f"{a.out}/run"]),
    ]
    for step in steps:
        rc = step()
        if rc:
            return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
