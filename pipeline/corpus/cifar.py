"""CIFAR-10's class names and its JPEG archive (`SPLIT/CLASS/FILE.jpg` members in a .tar.gz)."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Iterator

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
SHARED_ARCHIVE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10" / "cifar10-jpg.tar.gz"


def archive_path() -> Path:
    """The CIFAR-10 JPEG archive: $DEDE_CIFAR10_TAR, else the shared copy beside the checkout."""
    return Path(os.environ.get("DEDE_CIFAR10_TAR") or SHARED_ARCHIVE)


def iter_archive(path: str | Path, splits: tuple[str, ...] = SPLITS) -> Iterator[tuple[str, int, str, bytes]]:
    """(split, label, file name, JPEG bytes) of every image of `splits` in the archive, in archive order."""
    with tarfile.open(path, "r:gz") as tf:
        for member in tf:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[0] in splits and parts[1] in CLASSES:
                yield parts[0], CLASSES.index(parts[1]), parts[2], tf.extractfile(member).read()
