"""Train a DeDe decoder for a frozen encoder on auxiliary WebDataset shards, then calibrate it.

    python jobs/train_decoder.py --encoder resnet:resnet18-cifar@enc.safetensors --data 'aux/*.tar' --out dec
    python jobs/train_decoder.py ... --preset small --width 96      # a preset, one field overridden
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.dede.model import PRESETS, DeDeConfig  # noqa: E402
from pipeline.dede.train import TrainConfig, train_decoder  # noqa: E402

ARCHITECTURE = ("image_size", "patch_size", "width", "encoder_depth", "decoder_depth", "train_mask_ratio",
                "test_mask_ratio")


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(encoder="", data=[], out="")
    ap = cli.parser(__doc__)
    ap.add_argument("--encoder", required=True, help="KIND:NAME[@CHECKPOINT], e.g. resnet:resnet18-cifar@enc.safetensors")
    ap.add_argument("--data", required=True, nargs="+", help="shards: paths, folders, globs, {a..b} braces, fsspec URLs")
    ap.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    ap.add_argument("--epochs", type=cli.positive_int, default=d.epochs)
    ap.add_argument("--batch-size", type=cli.positive_int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--schedule", choices=["cosine", "constant"], default=d.schedule)
    ap.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    ap.add_argument("--max-samples", type=cli.positive_int, default=None,
                    help="train on N samples chosen by --subset")
    ap.add_argument("--subset", choices=["hash", "first"], default=d.subset,
                    help="with --max-samples: hash (default) = the N of lowest key hash over every shard, a uniform "
                         "subset in any shard order (every shard is read, only those N are decoded); first = the first N read")
    ap.add_argument("--holdout", type=float, default=d.holdout, help="share held out for calibration (at least 2,000 images or a quarter of the set, whichever is fewer)")
    ap.add_argument("--trim", type=float, default=d.trim,
                    help="share of each batch's highest-error images left out of the loss (robust training on an "
                         "auxiliary set that may hold up to that share of poison; e.g. 0.05)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                    help="decoder size (default paper: width 192, 6 + 4 blocks, 4 px patches); the flags below override it")
    ap.add_argument("--image-size", type=cli.positive_int,
                    help="the decoder's image size (default: the encoder's input size, at least 32; a 224 px encoder "
                         "gets a 224 px decoder with 16 px patches)")
    ap.add_argument("--patch-size", type=cli.positive_int,
                    help="override the preset's patch size (at a larger encoder's size, grown to keep <= 196 patches)")
    ap.add_argument("--width", type=cli.positive_int, help="override the preset's transformer width")
    ap.add_argument("--encoder-depth", type=cli.positive_int, help="override the preset's number of encoder blocks")
    ap.add_argument("--decoder-depth", type=cli.positive_int, help="override the preset's number of decoder blocks")
    ap.add_argument("--heads", type=cli.positive_int, help="override the preset's attention heads (encoder and decoder)")
    ap.add_argument("--train-mask-ratio", type=float, help="override the training mask ratio (0.99, the scoring one; the paper trains at 0.9)")
    ap.add_argument("--test-mask-ratio", type=float, help="override the scoring mask ratio (0.99)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    return ap


def model_config(a: argparse.Namespace) -> DeDeConfig:
    """The preset with the size flags that were given applied on top."""
    overrides = {k: getattr(a, k) for k in ARCHITECTURE if getattr(a, k) is not None}
    if a.heads is not None:
        overrides.update(encoder_heads=a.heads, decoder_heads=a.heads)
    return DeDeConfig.preset(a.preset, **overrides)


def run(a: argparse.Namespace) -> int:
    cfg = TrainConfig(encoder=a.encoder, data=a.data, out=a.out, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                      weight_decay=a.weight_decay, schedule=a.schedule, warmup_epochs=a.warmup_epochs,
                      max_samples=a.max_samples, subset=a.subset, holdout=a.holdout, trim=a.trim, seed=a.seed,
                      device=a.device,
                      model=model_config(a), resume=a.resume, match_encoder=a.image_size is None)
    out = train_decoder(cfg)
    print(json.dumps({"out": a.out, "final_loss": out.training.final_loss, "minutes": out.training.minutes,
                      "n_train": out.data.n_train, "n_holdout": out.data.n_holdout, "skipped": out.data.skipped,
                      "calibration_mean": out.calibration.mean}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
