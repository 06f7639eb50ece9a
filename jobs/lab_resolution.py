"""The 32 px decoder against one at the encoder's resolution on a 64 px victim with a small trigger (issue 16):
BadEncoder on the lab's clean SimCLR run at 64 px, fine-tuned on Tiny-ImageNet, two decoders, two pools, DeDe
alone (pipeline/lab/resolution.py). Every step is cached in the lab cache; writes RESULTS/resolution.json and
RESULTS/resolution.md.

  lab_resolution.py --threads 1                 # the clean encoder: the newest cached clean SimCLR
  lab_resolution.py --render                    # rewrite resolution.md from resolution.json
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.lab import detect_report, resolution  # noqa: E402
from pipeline.lab.compute import setup  # noqa: E402
from pipeline.lab.detect import clean_simclr  # noqa: E402
from pipeline.lab.encoders import SIMCLR_ENCODER_64  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--clean", default=None, help="clean SimCLR checkpoint (default: the newest cached one)")
    ap.add_argument("--patch", type=cli.positive_int, default=resolution.ResolutionConfig.patch,
                    help="side of the white square at 64 px")
    ap.add_argument("--scale", type=cli.positive_float, default=1.0, help="multiply every image count (tests)")
    ap.add_argument("--decoder-epochs", type=cli.positive_int, default=resolution.ResolutionConfig.decoder_epochs)
    ap.add_argument("--epochs", type=cli.positive_int, default=resolution.ResolutionConfig.epochs,
                    help="BadEncoder epochs")
    ap.add_argument("--lr", type=cli.positive_float, default=resolution.ResolutionConfig.lr,
                    help="BadEncoder learning rate")
    ap.add_argument("--results", type=Path, default=Path("results"), help="folder of resolution.json and .md")
    ap.add_argument("--render", action="store_true", help="only rewrite resolution.md from resolution.json")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    cli.add_device(ap)
    return ap


def run(a: argparse.Namespace) -> None:
    res = None
    if not a.render:
        found = clean_simclr()
        checkpoint = a.clean or (found.weights if found else None)
        if not checkpoint:
            raise BadInput("no clean SimCLR in the lab cache: run jobs/lab_simclr.py first, or pass --clean CKPT")
        cfg = resolution.ResolutionConfig(patch=a.patch, epochs=a.epochs, lr=a.lr, decoder_epochs=a.decoder_epochs)
        res = resolution.measure(cfg, f"lab:{SIMCLR_ENCODER_64}@{checkpoint}", setup(a.device, a.threads),
                                 threads=a.threads or 1, scale=a.scale, progress=a.progress)
        res.update({"config": asdict(cfg), "scale": a.scale,
                    **detect_report.meta(a.argv, "jobs/lab_resolution.py")})
    detect_report.write_generated(a.results, "resolution", res, resolution.render, "jobs/lab_resolution.py")


def main(argv: list[str] | None = None) -> int:
    return cli.main_recorded(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
