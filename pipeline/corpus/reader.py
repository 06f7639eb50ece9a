"""Tolerant streaming tar reader: every readable sample with its members' raw bytes, never unpickled.

Ray's read_webdataset and webdataset's handlers both lose data on a truncated tar (the read task
fails, or the rest of the shard is skipped without a record), so this reader is hand-written: it
yields what it could read plus an error record naming what was lost. Python's `tarfile` (stream
mode, any compression) parses the headers, but it takes a missing, short or bad header after the
first member for a normal end; the reader records each header block `tarfile` parses and accepts
an archive as complete only when it ends with the two zero blocks of the end-of-archive marker.
"""
from __future__ import annotations

import lzma
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Iterator

import fsspec

# WebDataset's key rule: key = folder + basename up to the first dot, suffix = the rest.
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
BLOCK = tarfile.BLOCKSIZE
# Members larger than this are skipped unread: CC3M / LAION images are a few MB at most, and a
# 64 MiB PNG or JPEG already decodes to more pixels than the decoder's bomb guard allows.
MAX_MEMBER_BYTES = 64 * 2**20
# A WebDataset sample holds a handful of members (image, caption, json, class...).
MAX_MEMBERS = 64
_EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                     tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


@dataclass
class Sample:
    """One sample of a shard: member names and bytes in tar order; `error` is `kind: detail`.
    Names that are not valid UTF-8 are held escaped (see `escape_name`)."""

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


def valid_utf8(text: str) -> bool:
    """False for a str holding lone surrogates (undecodable bytes under `surrogateescape`, or a
    `\\udXXX` escape from JSON): Arrow string columns and UTF-8 files refuse those."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape_name(name: str) -> str:
    """A name decoded with `surrogateescape` (tar member names, local file names) -> a valid UTF-8
    string: each undecodable byte becomes `\\xNN`, so the same bytes always give the same text."""
    raw = name.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def _recording_info(max_header_bytes: int) -> type[tarfile.TarInfo]:
    """A TarInfo class that keeps the last header block `tarfile` parsed (the one that ended the
    archive, when iteration stops) and refuses extended headers above `max_header_bytes`."""

    class _Info(tarfile.TarInfo):
        last_block = b""

        @classmethod
        def frombuf(cls, buf, encoding, errors):
            cls.last_block = buf
            obj = super().frombuf(buf, encoding, errors)
            if obj.type in _EXTENDED_HEADERS and obj.size > max_header_bytes:
                raise tarfile.InvalidHeaderError(f"extended header of {obj.size} bytes")
            return obj

    return _Info


def _end_problem(tf: tarfile.TarFile, info: type[tarfile.TarInfo]) -> str | None:
    """Why the archive did not end properly (`truncated at byte N` / `bad header at byte N`), or None
    when the header block that ended it starts the end-of-archive marker: two zero blocks."""
    return _zero_block_problem(tf, info.last_block) or _zero_block_problem(tf, tf.fileobj.read(BLOCK))


def _zero_block_problem(tf: tarfile.TarFile, block: bytes) -> str | None:
    """Why `block`, just read, is not a zero block of the end-of-archive marker, or None."""
    if len(block) < BLOCK:
        return f"truncated at byte {_position(tf)}"
    if block.count(0) != BLOCK:
        return f"bad header at byte {_position(tf) - BLOCK}"
    return None


def iter_shard(url: str, *, max_member_bytes: int = MAX_MEMBER_BYTES,
               max_members: int = MAX_MEMBERS) -> Iterator[Sample]:
    """Samples of one shard in order. Broken parts become samples with `error` set; a truncated or
    unreadable tar ends with an error sample keyed `__tar__` naming the byte offset of the loss, and
    the sample being read when the tar broke is an error too. Members above `max_member_bytes` are
    skipped unread and a sample with more than `max_members` members keeps only the first ones; both
    make the sample an error (`limit: ...`)."""
    index = 0
    current: Sample | None = None
    names: set[str] = set()
    seen: set[str] = set()
    tf: tarfile.TarFile | None = None

    def emit(s: Sample) -> Sample:
        nonlocal index
        s.index = index
        index += 1
        return s

    def broken(where: str, detail: str = "") -> Iterator[Sample]:
        if current is not None:
            current.error = current.error or f"tar: sample cut off ({where})"
            yield emit(current)
        yield emit(Sample(url, "__tar__", 0, error=f"tar: {where} after {index} samples{detail}"))

    info_cls = _recording_info(max_member_bytes)
    try:
        with fsspec.open(url, "rb") as f:
            try:
                tf = tarfile.open(fileobj=f, mode="r|*", tarinfo=info_cls)
            except tarfile.ReadError as e:
                yield emit(Sample(url, "__tar__", 0, error=f"tar: not a readable tar ({e})"))
                return
            for info in tf:
                if info.isdir():
                    continue
                name = escape_name(info.name)
                m = _KEY_RE.match(name)
                key = m.group(1) if m else name
                if current is not None and key != current.key:
                    yield emit(current)
                    current = None
                if current is None:
                    current, names = Sample(url, key, 0), set()
                    if key in seen:
                        current.error = "duplicate: key appears again after other samples"
                    seen.add(key)
                problem = _member_problem(info, name, m is not None, names, len(current.members),
                                          max_member_bytes, max_members)
                current.error = current.error or problem
                if problem is None or not problem.startswith("limit:"):
                    current.members.append((name, tf.extractfile(info).read() if info.isfile() else b""))
                names.add(name.lower())
            problem = _end_problem(tf, info_cls)
            if problem is not None:
                yield from broken(problem)
                return
            if current is not None:
                yield emit(current)
                current = None
    except (tarfile.ReadError, EOFError) as e:
        yield from broken(f"truncated at byte {_position(tf)}", f" ({type(e).__name__}: {e})")
    except (tarfile.TarError, OSError, ValueError, zlib.error, lzma.LZMAError) as e:
        yield from broken(f"unreadable at byte {_position(tf)}", f" ({type(e).__name__}: {e})")


def _member_problem(info: tarfile.TarInfo, name: str, has_suffix: bool, names: set[str], held: int,
                    max_member_bytes: int, max_members: int) -> str | None:
    """Why one member makes its sample an error (`kind: detail`), or None; `names` are the sample's
    earlier member names (lower-cased), `held` how many members it already holds."""
    if held >= max_members:
        return f"limit: sample has more than {max_members} members (--max-members)"
    if info.isfile() and info.size > max_member_bytes:
        return f"limit: member {name!r} is {info.size} bytes, above the limit {max_member_bytes} (--max-member-bytes)"
    if name != info.name:
        return f"name: member name {name!r} is not valid UTF-8"
    if not info.isfile():
        return f"member: {name!r} is not a regular file"
    if unsafe_name(name):
        return f"name: unsafe member name {name!r}"
    if not has_suffix:
        return f"name: member {name!r} has no extension"
    if name.lower() in names:
        return f"duplicate: member {name!r} repeated in one sample"
    return None


def _position(tf: tarfile.TarFile | None) -> int:
    """Bytes of (uncompressed) tar data read so far."""
    return tf.fileobj.tell() if tf is not None else 0
