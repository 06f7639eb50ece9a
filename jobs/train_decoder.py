"""Train a DeDe decoder for a frozen encoder on auxiliary WebDataset shards, then calibrate it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.dede.train import TrainConfig, train_decoder  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig(encoder="", data=[], out="")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--encoder", required=True, help="KIND:NAME[@CHECKPOINT], e.g. resnet:resnet18-cifar@enc.safetensors")
    ap.add_argument("--data", required=True, nargs="+", help="shards: paths, folders, globs, {a..b} braces, fsspec URLs")
    ap.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--schedule", choices=["cosine", "constant"], default=d.schedule)
    ap.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--holdout", type=float, default=d.holdout, help="share held out for calibration")
    ap.add_argument("--image-size", type=int, default=d.image_size)
    ap.add_argument("--patch-size", type=int, default=d.patch_size)
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--encoder-depth", type=int, default=d.encoder_depth)
    ap.add_argument("--decoder-depth", type=int, default=d.decoder_depth)
    ap.add_argument("--heads", type=int, default=d.heads)
    ap.add_argument("--train-mask-ratio", type=float, default=d.train_mask_ratio)
    ap.add_argument("--test-mask-ratio", type=float, default=d.test_mask_ratio)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    a = ap.parse_args(argv)
    cfg = TrainConfig(**{k: v for k, v in vars(a).items()})
    try:
        out = train_decoder(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"train_decoder: error: {e}", file=sys.stderr)
        return 2
    cal = out["calibration"]
    print(json.dumps({"out": a.out, "final_loss": out["training"]["final_loss"], "minutes": out["training"]["minutes"],
                      "n_train": out["data"]["n_train"], "n_holdout": out["data"]["n_holdout"],
                      "skipped": out["data"]["skipped"], "calibration_mean": cal["mean"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
