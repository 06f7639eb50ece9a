"""The demo: find a real backdoor. A short BadEncoder fine-tune of the committed clean lab encoder
(assets/demo-encoder/, checked against its card's sha256), a corpus of the CIFAR-10 test split with 1%
of it triggered and its ground truth, a decoder trained on CIFAR-10 train images, the scoring job with
the embedding detectors and its report; prints the verdict, the report's path and AUC / TPR / FPR.

    python jobs/demo.py --out demo              # the backdoored encoder: a backdoor verdict
    python jobs/demo.py --out demo --clean      # the clean encoder, nothing triggered: no evidence
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.dede.model import PRESETS  # noqa: E402
from pipeline.lab.demo import DemoConfig, run_demo  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    ap = cli.parser(__doc__)
    ap.add_argument("--out", default=d.out, help=f"folder for encoder, corpus, decoder and run (default {d.out})")
    ap.add_argument("--clean", action="store_true", help="no backdoor: the clean encoder is the victim, nothing triggered")
    ap.add_argument("--corpus-size", type=cli.positive_int, default=d.corpus_size,
                    help=f"CIFAR-10 test images in the corpus, 1%% of them triggered (default {d.corpus_size})")
    ap.add_argument("--aux-samples", type=cli.positive_int, default=d.aux_samples,
                    help=f"CIFAR-10 train images for the decoder (default {d.aux_samples})")
    ap.add_argument("--epochs", type=cli.positive_int, default=d.epochs, help=f"decoder epochs (default {d.epochs})")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=d.preset, help=f"decoder size (default {d.preset})")
    ap.add_argument("--finetune-epochs", type=cli.positive_int, default=d.finetune_epochs,
                    help=f"BadEncoder epochs (default {d.finetune_epochs})")
    ap.add_argument("--shadow", type=cli.positive_int, default=d.shadow,
                    help=f"BadEncoder shadow images (default {d.shadow})")
    ap.add_argument("--encoder", type=Path, default=d.encoder,
                    help="the clean encoder's safetensors, its card.json beside it (default: the committed one)")
    cli.add_device(ap)
    return ap


def run(a: argparse.Namespace) -> int:
    run_demo(DemoConfig(out=a.out, clean=a.clean, corpus_size=a.corpus_size, aux_samples=a.aux_samples,
                        epochs=a.epochs, preset=a.preset, finetune_epochs=a.finetune_epochs, shadow=a.shadow,
                        encoder=a.encoder, device=a.device, threads=a.threads))
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
