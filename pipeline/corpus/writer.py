"""The one tar writer: deterministic members, streamed to a temp file, published atomically."""
from __future__ import annotations

import io
import os
import tarfile
import tempfile
import uuid

import hashlib

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.corpus.reader import unsafe_name


class _HashingFile:
    """A write-only file wrapper that keeps the sha256 of everything written."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()

    def write(self, data) -> int:
        self.h.update(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.f.tell()

    def flush(self) -> None:
        self.f.flush()


class TarSink:
    """Write members (name, bytes) to `url`; visible under that name only after close().

    Use as a context manager; on an exception the partial file is discarded. Unsafe names
    (absolute, `..`) are refused: archive member names are data, never paths.
    """

    def __init__(self, url: str):
        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            parent = os.path.dirname(self.path) or "."
            os.makedirs(parent, exist_ok=True)
            self.tmp = os.path.join(parent, f".{os.path.basename(self.path)}.{uuid.uuid4().hex}.tmp")
        else:
            fd, self.tmp = tempfile.mkstemp(suffix=".tar")
            os.close(fd)
        self._file = open(self.tmp, "wb")
        self._hashing = _HashingFile(self._file)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.PAX_FORMAT)
        self.count = 0
        self.sha256: str | None = None  # of the published bytes, set by close()

    def add(self, name: str, data: bytes) -> None:
        if unsafe_name(name):
            raise ValueError(f"refusing unsafe tar member name {name!r}")
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o444
        info.uname = info.gname = "bigdata"
        self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        self._tar.close()
        self.sha256 = self._hashing.h.hexdigest()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.local:
            os.replace(self.tmp, self.path)
        else:
            parent = self.path.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.put_file(self.tmp, self.path)
            os.unlink(self.tmp)

    def discard(self) -> None:
        self._tar.close()
        self._file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> "TarSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_tar(url: str, members: list[tuple[str, bytes]]) -> None:
    """Write a whole tar of (name, bytes) members atomically."""
    with TarSink(url) as sink:
        for name, data in members:
            sink.add(name, data)
