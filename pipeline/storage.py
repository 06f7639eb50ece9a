"""Atomic writes on any fsspec filesystem: readers never see half a file."""
from __future__ import annotations

import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write `data` to `url`: local files go to a temp name in the same folder, then os.replace;
    object stores get one whole upload (an object is only visible once complete)."""
    fs, path = fsspec.core.url_to_fs(url)
    parent = os.path.dirname(path.rstrip("/"))
    if isinstance(fs, LocalFileSystem):
        os.makedirs(parent or ".", exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)


def write_text_atomic(url: str, text: str) -> None:
    write_bytes_atomic(url, text.encode("utf-8"))


def exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)
