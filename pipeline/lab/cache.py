"""Trained models cached by config hash: `<cache>/<name>-<hash>/model.safetensors` + `card.json`."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline.checkpoints import save_safetensors
from pipeline.storage import write_text_atomic


def cache_dir() -> Path:
    """The lab cache folder: $DEDE_LAB_CACHE, else ~/.cache/dede-lab."""
    return Path(os.environ.get("DEDE_LAB_CACHE") or Path.home() / ".cache" / "dede-lab")


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine that trained: CPU model and threads, or the GPU."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (cuda)"
    return f"{cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


@dataclass
class Entry:
    """One cached model: its folder, weights path and card."""

    folder: Path
    card: dict[str, Any]

    @property
    def weights(self) -> Path:
        return self.folder / "model.safetensors"

    @property
    def spec(self) -> str:
        return self.card["spec"]


def entry_folder(name: str, config: dict[str, Any]) -> Path:
    """Where the model of (name, config) lives in the cache."""
    return cache_dir() / f"{name}-{config_hash(config)}"


def lookup(name: str, config: dict[str, Any]) -> Entry | None:
    """The cached entry of (name, config), or None when it has not been trained."""
    folder = entry_folder(name, config)
    card_path = folder / "card.json"
    if card_path.exists() and (folder / "model.safetensors").exists():
        return Entry(folder, json.loads(card_path.read_text()))
    return None


def newest(name: str) -> Entry | None:
    """The most recently finished cached entry named `name` (any config), or None when there is none."""
    found = [Entry(c.parent, json.loads(c.read_text())) for c in cache_dir().glob(f"{name}-*/card.json")
             if (c.parent / "model.safetensors").exists()]
    return max(found, key=lambda e: e.card.get("finished", ""), default=None)


TrainFn = Callable[[Path], tuple[dict[str, torch.Tensor], dict[str, Any]]]


def cached(name: str, encoder_name: str, config: dict[str, Any], train: TrainFn) -> Entry:
    """Return the cached model of (name, config); otherwise run `train(folder) -> (state, results)`,
    save the state as safetensors and write the card (config, results, minutes, machine, command)."""
    hit = lookup(name, config)
    if hit is not None:
        print(f"cache hit: {hit.folder}", file=sys.stderr)
        return hit
    folder = entry_folder(name, config)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    state, results = train(folder)
    weights = folder / "model.safetensors"
    sha = save_safetensors(state, str(weights), metadata={"name": name, "config": json.dumps(config, sort_keys=True)})
    card = {
        "name": name,
        "spec": f"lab:{encoder_name}@{weights}",
        "config": config,
        "config_hash": config_hash(config),
        "weights_sha256": sha,
        **results,
        "wall_minutes": round((time.time() - t0) / 60, 2),
        "machine": machine(),
        "command": " ".join(sys.argv),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_text_atomic(str(folder / "card.json"), json.dumps(card, indent=2, sort_keys=True))
    return Entry(folder, card)
