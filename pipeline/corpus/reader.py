"""Tolerant streaming tar reader: every readable sample with its members' raw bytes, never unpickled.

Ray's read_webdataset and webdataset's handlers both lose data on a truncated tar (the read task
fails, or the rest of the shard is skipped without a record), so this reader is hand-written: it
yields what it could read plus an error record naming what was lost.
"""
from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

import fsspec

# WebDataset's key rule: key = folder + basename up to the first dot, suffix = the rest.
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass
class Sample:
    """One sample of a shard: original member names and bytes in tar order; `error` is `kind: detail`."""

    shard: str
    key: str
    index: int
    members: list[tuple[str, bytes]] = field(default_factory=list)
    error: str | None = None

    @property
    def fields(self) -> dict[str, bytes]:
        """Suffix (lower-cased) -> bytes."""
        out = {}
        for name, data in self.members:
            m = _KEY_RE.match(name)
            if m:
                out.setdefault(m.group(2).lower(), data)
        return out


def unsafe_name(name: str) -> bool:
    """True for member names that would escape a folder if extracted: absolute, `..`, NUL, backslash."""
    return (name.startswith("/") or "\0" in name or "\\" in name
            or any(part == ".." for part in name.split("/")) or bool(re.match(r"^[A-Za-z]:", name)))


def iter_shard(url: str) -> Iterator[Sample]:
    """Samples of one shard in order. Broken parts become samples with `error` set; a truncated or
    unreadable tar ends with an error sample keyed `__tar__` describing the loss."""
    index = 0
    current: Sample | None = None
    seen: set[str] = set()

    def emit(s: Sample) -> Sample:
        nonlocal index
        s.index = index
        index += 1
        return s

    try:
        with fsspec.open(url, "rb") as f:
            try:
                tf = tarfile.open(fileobj=f, mode="r|*")
            except tarfile.ReadError as e:
                yield emit(Sample(url, "__tar__", 0, error=f"tar: not a readable tar ({e})"))
                return
            for info in tf:
                if info.isdir():
                    continue
                name = info.name
                m = _KEY_RE.match(name)
                key = m.group(1) if m else name
                if current is not None and key != current.key:
                    yield emit(current)
                    current = None
                if current is None:
                    current = Sample(url, key, 0)
                    if key in seen:
                        current.error = "duplicate: key appears again after other samples"
                    seen.add(key)
                data = b""
                if info.isfile():
                    data = tf.extractfile(info).read()
                elif current.error is None:
                    current.error = f"member: {name!r} is not a regular file"
                current.members.append((name, data))
                if current.error is None:
                    if unsafe_name(name):
                        current.error = f"name: unsafe member name {name!r}"
                    elif not m:
                        current.error = f"name: member {name!r} has no extension"
                    elif sum(1 for n, _ in current.members if n.lower() == name.lower()) > 1:
                        current.error = f"duplicate: member {name!r} repeated in one sample"
            if current is not None:
                yield emit(current)
                current = None
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if current is not None:
            current.error = current.error or f"tar: sample cut by a broken tar ({type(e).__name__}: {e})"
            yield emit(current)
        yield emit(Sample(url, "__tar__", 0, error=f"tar: shard unreadable after {index} samples ({type(e).__name__}: {e})"))
