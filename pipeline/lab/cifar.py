"""CIFAR-10 as uint8 arrays, decoded once from the shared JPEG archive into the lab cache."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile

import numpy as np
from PIL import Image

from pipeline.lab.cache import cache_dir

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEFAULT_ARCHIVE = "/work/shared/data/cifar10/cifar10-jpg.tar.gz"


def archive_path() -> str:
    """The CIFAR-10 JPEG archive: $DEDE_CIFAR10_TAR, else the shared copy."""
    return os.environ.get("DEDE_CIFAR10_TAR", DEFAULT_ARCHIVE)


def _decode_archive(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Archive -> {split: (images (N,32,32,3) uint8, labels (N,) int64)} sorted by class then file."""
    rows: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tf:
        for info in tf:
            parts = info.name.split("/")
            if not info.isfile() or len(parts) != 3 or parts[0] not in rows or parts[1] not in CLASSES:
                continue
            img = Image.open(io.BytesIO(tf.extractfile(info).read())).convert("RGB")
            rows[parts[0]].append((CLASSES.index(parts[1]), parts[2], np.asarray(img, dtype=np.uint8)))
    out = {}
    for split, items in rows.items():
        items.sort(key=lambda r: (r[0], r[1]))
        out[split] = (np.stack([r[2] for r in items]), np.array([r[0] for r in items], dtype=np.int64))
    return out


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N,32,32,3) uint8, labels (N,) int64) of 'train' or 'test', cached as npz."""
    target = cache_dir() / f"cifar10_{split}.npz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        for name, (x, y) in _decode_archive(archive_path()).items():
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
