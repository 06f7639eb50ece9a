"""Atomic writes on any fsspec filesystem: readers never see half a file."""
from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem


NAME_MAX = 255


def temp_prefix(basename: str) -> str:
    """The start of every temp name for `basename`: `.{basename}.`, or `.{sha256}.` when the full temp
    name (prefix + 32 hex + `.tmp`) would pass the 255-byte file-name limit."""
    prefix = f".{basename}."
    if len((prefix + "0" * 32 + ".tmp").encode("utf-8", "surrogateescape")) <= NAME_MAX:
        return prefix
    return f".{hashlib.sha256(basename.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}."


class AtomicFile:
    """A binary file that appears at `url` only on commit(); abort() (or an exception inside `with`) drops it.

    Local files are written to a temp name in the same folder, fsynced, then os.replace'd; object stores
    get one whole upload of a local temp file (an object is only visible once complete).
    """

    def __init__(self, url: str):
        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            parent = os.path.dirname(self.path.rstrip("/")) or "."
            os.makedirs(parent, exist_ok=True)
            self.tmp = os.path.join(parent, f"{temp_prefix(os.path.basename(self.path))}{uuid.uuid4().hex}.tmp")
        else:
            fd, self.tmp = tempfile.mkstemp(suffix=".tmp")
            os.close(fd)
        self.file: BinaryIO = open(self.tmp, "wb")

    def commit(self) -> None:
        """Flush, fsync and publish the file under its name; on any failure (a full disk) the temp file goes."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.local:
                os.replace(self.tmp, self.path)
                return
            parent = os.path.dirname(self.path.rstrip("/"))
            if parent:
                self.fs.makedirs(parent, exist_ok=True)
            self.fs.put_file(self.tmp, self.path)
            os.unlink(self.tmp)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop what was written; nothing appears under the name."""
        try:
            self.file.close()
        except OSError:
            pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write `data` to `url` atomically (see AtomicFile)."""
    with AtomicFile(url) as f:
        f.write(data)


def write_text_atomic(url: str, text: str) -> None:
    """Write UTF-8 `text` to `url` atomically."""
    write_bytes_atomic(url, text.encode("utf-8"))


def exists(url: str) -> bool:
    """Whether `url` exists on its filesystem."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)
