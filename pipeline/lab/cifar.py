"""CIFAR-10 as uint8 arrays, decoded once from the JPEG archive (pipeline.corpus.cifar) into the lab cache."""
from __future__ import annotations

import hashlib
import io
import os

import numpy as np
from PIL import Image

from pipeline.corpus.cifar import SPLITS, archive_path, iter_archive
from pipeline.lab.cache import cache_dir


def _decode_archive() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Archive -> {split: (images (N,32,32,3) uint8, labels (N,) int64)} sorted by class then file."""
    rows: dict[str, list[tuple[int, str, np.ndarray]]] = {split: [] for split in SPLITS}
    path = archive_path()
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-10 archive not found: {path} (set $DEDE_CIFAR10_TAR)")
    for split, label, name, data in iter_archive(path):
        rows[split].append((label, name, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)))
    out = {}
    for split, items in rows.items():
        items.sort(key=lambda r: (r[0], r[1]))
        out[split] = (np.stack([r[2] for r in items]), np.array([r[0] for r in items], dtype=np.int64))
    return out


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N,32,32,3) uint8, labels (N,) int64) of 'train' or 'test', cached as npz."""
    if split not in SPLITS:
        raise ValueError(f"CIFAR-10 split must be train or test, got {split!r}")
    target = cache_dir() / f"cifar10_{split}.npz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        for name, (x, y) in _decode_archive().items():
            tmp = cache_dir() / f".cifar10_{name}.{os.getpid()}.npz"
            np.savez(tmp, images=x, labels=y)
            os.replace(tmp, cache_dir() / f"cifar10_{name}.npz")
    with np.load(target) as z:
        return z["images"], z["labels"]


def data_hash(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 (first 16 hex) of a data set's pixels and labels."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()[:16]
