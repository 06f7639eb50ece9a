"""Pack images into WebDataset shards: any image folder (class = parent folder), or CIFAR-10."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pipeline.corpus.cifar import CLASSES, SPLITS, archive_path, iter_archive
from pipeline.corpus.decode import IMAGE_SUFFIXES
from pipeline.corpus.writer import TarSink


def write_shards(samples: Iterator[tuple[str, dict[str, bytes]]], out_dir: str, shard_size: int = 1000,
                 total: int | None = None, prefix: str = "") -> list[str]:
    """(key, {suffix: bytes}) samples -> `out_dir/{prefix}NNNNNN.tar` shards of `shard_size` samples."""
    urls, sink, in_shard = [], None, 0
    try:
        for key, fields in tqdm(samples, total=total, desc="packing", unit="img", disable=None):
            if sink is None or in_shard >= shard_size:
                if sink is not None:
                    sink.close()
                urls.append(f"{out_dir}/{prefix}{len(urls):06d}.tar")
                sink, in_shard = TarSink(urls[-1]), 0
            for suf, data in fields.items():
                sink.add(f"{key}.{suf}", data)
            in_shard += 1
        if sink is not None:
            sink.close()
            sink = None
    finally:
        if sink is not None:
            sink.discard()
    return urls


def folder_samples(src: str) -> list[tuple[str, dict[str, bytes]]]:
    """Every image under `src` as a sample: original bytes plus `.json` {label, path}."""
    root = Path(src)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_SUFFIXES and p.is_file())
    out = []
    for i, p in enumerate(files):
        rel = p.relative_to(root).as_posix()
        meta = {"label": p.parent.name if p.parent != root else None, "path": rel}
        out.append((f"{i:08d}", {p.suffix.lower().lstrip("."): p.read_bytes(), "json": json.dumps(meta).encode()}))
    return out


def cifar10_samples(split: str, source: str | None = None) -> list[tuple[str, dict[str, bytes]]]:
    """CIFAR-10 `split` ('train' or 'test') as samples (`.jpg`, `.cls`, `.json`), from the shared JPEG
    archive (`source`, else pipeline.corpus.cifar.archive_path()) when present, else from torchvision's downloader."""
    if split not in SPLITS:
        raise ValueError(f"CIFAR-10 split must be train or test, got {split!r}")
    src = Path(source) if source else archive_path()
    items: list[tuple[int, str, bytes]] = []
    if src.exists():
        items = sorted(((label, name, data) for _, label, name, data in iter_archive(src, (split,))),
                       key=lambda t: (t[1], t[0]))
    else:
        import torchvision

        cache = os.path.join(os.path.expanduser("~"), ".cache", "dede", "torchvision")
        ds = torchvision.datasets.CIFAR10(cache, train=split == "train", download=True)
        for i, (arr, label) in enumerate(zip(ds.data, ds.targets)):
            buf = io.BytesIO()
            Image.fromarray(np.asarray(arr)).save(buf, format="JPEG", quality=95)
            items.append((int(label), f"{i:05d}", buf.getvalue()))
    return [(f"{split}_{i:06d}", {"jpg": data, "cls": str(label).encode(),
                                   "json": json.dumps({"label": label, "class": CLASSES[label]}).encode()})
            for i, (label, _, data) in enumerate(items)]
