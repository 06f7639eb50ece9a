"""The one tar writer: deterministic members, streamed to a temp file, published atomically."""
from __future__ import annotations

import hashlib
import io
import tarfile

from pipeline.corpus.reader import unsafe_name
from pipeline.storage import AtomicFile


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
        self._out = AtomicFile(url)
        self._hashing = _HashingFile(self._out.file)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.PAX_FORMAT)
        self.count = 0
        self.sha256: str | None = None  # of the published bytes, set by close()

    def add(self, name: str, data: bytes) -> None:
        """Append one member `name` holding `data`; a ValueError for an unsafe name."""
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
        """Finish the archive and publish it under its name."""
        self._tar.close()
        self.sha256 = self._hashing.h.hexdigest()
        self._out.commit()

    def discard(self) -> None:
        """Drop the partial archive; nothing appears under the name."""
        self._tar.close()
        self._out.abort()

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
