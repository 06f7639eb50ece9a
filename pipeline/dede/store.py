"""A trained decoder on disk: `model.safetensors` + `config.json` in one folder (local or fsspec URL)."""
from __future__ import annotations

import json

import torch

from pipeline.checkpoints import load_state_dict, read_bytes, save_safetensors
from pipeline.dede.model import DeDe, DeDeConfig
from pipeline.storage import write_text_atomic

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_decoder(out_dir: str, model: DeDe, config: dict) -> dict:
    """Write weights then config (config last: its presence means the decoder is complete).
    Returns the config as written, with the model architecture and the weights' sha256."""
    sha = save_safetensors(model.state_dict(), f"{out_dir}/{WEIGHTS}")
    config = {**config, "model": model.cfg.to_dict(), "weights_sha256": sha}
    write_text_atomic(f"{out_dir}/{CONFIG}", json.dumps(config, indent=2, sort_keys=True))
    return config


def load_config(out_dir: str) -> dict:
    try:
        return json.loads(read_bytes(f"{out_dir}/{CONFIG}"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no decoder at {out_dir}: {CONFIG} is missing (train one with jobs/train_decoder.py)") from None


def load_decoder(out_dir: str, device: str | torch.device = "cpu") -> tuple[DeDe, dict, str]:
    """(model in eval mode, config, sha256 of the weights file)."""
    config = load_config(out_dir)
    model = DeDe(DeDeConfig(**config["model"]))
    sd, sha = load_state_dict(f"{out_dir}/{WEIGHTS}")
    model.load_state_dict(sd)
    return model.to(device).eval(), config, sha
