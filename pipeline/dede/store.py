"""A trained decoder on disk: `model.safetensors` + `config.json` in one folder (local or fsspec URL).

The weights are checked against config.json's `weights_sha256` whenever they are read.
"""
from __future__ import annotations

import json
from dataclasses import replace

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from pipeline.checkpoints import read_checked, save_safetensors
from pipeline.dede.config import CONFIG, DecoderConfig, load_decoder_config
from pipeline.dede.model import DeDe, create_dede
from pipeline.errors import BadInput, one_line
from pipeline.storage import write_text_atomic

WEIGHTS = "model.safetensors"


def save_decoder(out_dir: str, model: DeDe, config: DecoderConfig) -> DecoderConfig:
    """Write weights then config (config last: its presence means the decoder is complete).
    Returns the config as written, with the model architecture and the weights' sha256."""
    sha = save_safetensors(model.state_dict(), f"{out_dir}/{WEIGHTS}")
    config = replace(config, model=model.cfg, weights_sha256=sha)
    write_text_atomic(f"{out_dir}/{CONFIG}", json.dumps(config.to_dict(), indent=2, sort_keys=True))
    return config


def _checked_weights(decoder_dir: str, config: DecoderConfig) -> bytes:
    """The weights file's bytes, refused unless their sha256 is config.json's `weights_sha256`."""
    return read_checked(f"{decoder_dir}/{WEIGHTS}", config.weights_sha256, "decoder weights file",
                        f"{CONFIG}'s weights_sha256")


def check_decoder(decoder_dir: str) -> DecoderConfig:
    """The cheap check before a job starts: config.json valid and the weights' checksum right, no model built."""
    config = load_decoder_config(decoder_dir)
    _checked_weights(decoder_dir, config)
    return config


def load_decoder(decoder_dir: str, device: str | torch.device = "cpu") -> tuple[DeDe, DecoderConfig, str]:
    """(model in eval mode, config, sha256 of the weights file); one-line BadInput for a bad folder."""
    config = load_decoder_config(decoder_dir)
    data = _checked_weights(decoder_dir, config)
    url = f"{decoder_dir}/{WEIGHTS}"
    try:
        state = st_load(data)
    except SafetensorError as e:
        raise BadInput(f"decoder weights {url} are not a readable safetensors file ({one_line(e)}); "
                       f"retrain or restore them") from None
    model = create_dede(config.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise BadInput(f"decoder weights {url} do not fit {CONFIG}'s model ({one_line(e)}); retrain the decoder") from None
    return model.to(device).eval(), config, config.weights_sha256
