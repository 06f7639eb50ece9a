"""A corpus with every kind of fault the job must survive (built with raw tarfile: the project's
writer refuses unsafe names, a scraped corpus does not)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def img_bytes(mode="RGB", size=(40, 32), fmt="JPEG", color=None, **save) -> bytes:
    rng = np.random.default_rng(abs(hash((mode, size, fmt))) % 2**32)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    elif color is not None:
        img = Image.new(mode, size, color)
    else:
        img = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def raw_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def build_fault_corpus(root: Path, good: list[tuple[str, dict[str, bytes]]]) -> dict:
    """Shards under `root`: faults/000000.tar (every per-sample fault), truncated/000000.tar,
    empty/000000.tar, notatar/000000.tar, zero/000000.tar (0 bytes). Returns what to expect."""
    jpg = good[0][1]["jpg"]
    bomb = io.BytesIO()
    Image.new("L", (9000, 9000)).save(bomb, format="PNG")
    exif_img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = exif_img.getexif()
    exif[0x0112] = 6  # rotate 90
    eb = io.BytesIO()
    exif_img.save(eb, format="JPEG", exif=exif.tobytes())
    corrupt = bytearray(jpg)
    corrupt[len(corrupt) // 3: len(corrupt) // 3 + 200] = b"\x00" * 200
    m: list[tuple[str, bytes]] = []
    expected_errors: dict[str, str] = {}

    def add(key, fields, error_kind=None):
        for suf, data in fields.items():
            m.append((f"{key}.{suf}", data))
        if error_kind:
            expected_errors[key] = error_kind

    for i, (k, f) in enumerate(good[:4]):
        add(f"good{i}", {"jpg": f["jpg"], "txt": b"a photo", "json": json.dumps({"label": i, "poisoned": i == 3}).encode()})
    add("corrupt", {"jpg": jpg[: len(jpg) // 2] + b"garbage" * 3, "txt": b"cut jpeg"}, "decode")
    add("scrambled", {"jpg": b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 10}, "decode")
    add("zerobyte", {"jpg": b"", "txt": b"empty"}, "decode")
    add("noimage", {"txt": b"caption only", "json": b"{}"}, "missing")
    add("png", {"png": img_bytes(fmt="PNG")})
    add("webp", {"webp": img_bytes(fmt="WEBP")})
    add("gray", {"jpg": img_bytes("L")})
    add("palette", {"png": img_bytes("P", fmt="PNG")})
    add("rgba", {"png": img_bytes("RGBA", fmt="PNG")})
    add("cmyk", {"jpg": img_bytes("CMYK")})
    add("sixteen", {"png": img_bytes("I;16", fmt="PNG")})
    add("exif", {"jpg": eb.getvalue()})
    add("bomb", {"png": bomb.getvalue()}, "bomb")
    add("badcaption", {"jpg": jpg, "txt": b"caf\xe9 \xff\xfe caption", "json": b"not json {"})
    add("dup", {"jpg": jpg})
    add("between", {"jpg": jpg})
    m.append(("dup.jpg", jpg))            # duplicate key, non-contiguous -> error
    expected_errors["dup#2"] = "duplicate"
    m.append(("../escape.jpg", jpg))      # unsafe names -> error, renamed in quarantine
    m.append(("../escape.txt", b"evil"))
    expected_errors["../escape"] = "name"
    m.append(("/abs/path.jpg", jpg))
    expected_errors["/abs/path"] = "name"
    add("last", {"jpg": jpg, "txt": b"last one"})
    raw_tar(root / "faults" / "000000.tar", m)

    # truncated: 10 good samples, cut in the middle
    raw_tar(root / "truncated" / "000000.tar", [(f"t{i}.jpg", good[i][1]["jpg"]) for i in range(10)])
    p = root / "truncated" / "000000.tar"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2 + 100])
    raw_tar(root / "empty" / "000000.tar", [])
    (root / "notatar").mkdir()
    (root / "notatar" / "000000.tar").write_bytes(b"this is a text file, not a tar archive\n" * 30)
    (root / "zero").mkdir()
    (root / "zero" / "000000.tar").write_bytes(b"")
    return {"errors": expected_errors, "faults_members": m}


# ---------------------------------------------------------------------------------------------
# Builders for the reader / decoder limits (issue 18)
# ---------------------------------------------------------------------------------------------

def sample_members(n: int, prefix: str = "s") -> list[tuple[str, bytes]]:
    """`n` samples of jpg + txt + json members (small distinct images), in tar order."""
    out = []
    for i in range(n):
        out += [(f"{prefix}{i:03d}.jpg", img_bytes(size=(24 + i, 20))),
                (f"{prefix}{i:03d}.txt", f"caption {i}".encode()),
                (f"{prefix}{i:03d}.json", json.dumps({"label": i}).encode())]
    return out


def tar_bytes(members: list[tuple[str, bytes]], compression: str = "") -> bytes:
    """A complete PAX tar (`compression` 'gz' for .tar.gz) of `members`, in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def member_spans(data: bytes) -> list[tuple[str, int, int]]:
    """(name, header offset, end of data) of every member of a complete uncompressed tar."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return [(m.name, m.offset, m.offset_data + m.size) for m in tf]


def archive_end(data: bytes) -> int:
    """The offset just past the end-of-archive marker (two zero blocks) of a complete tar."""
    last = member_spans(data)[-1][2]
    return -(-last // 512) * 512 + 1024


def strip_png(width: int, height: int) -> bytes:
    """A tiny-file PNG of extreme aspect ratio (one grey line)."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


class _Zeros(io.RawIOBase):
    """`size` zero bytes, produced on demand (a big member without holding it in memory)."""

    def __init__(self, size: int):
        self.left = size

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def big_member_tar_gz(path: Path, size: int, key: str = "big") -> None:
    """A .tar.gz: a good sample, then sample `key` with a `size`-byte png member, then a good one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=1) as tf:
        members = [("a.jpg", img_bytes()), (f"{key}.txt", b"huge"), (f"{key}.png", None), ("z.jpg", img_bytes())]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = size if data is None else len(data)
            tf.addfile(info, _Zeros(size) if data is None else io.BytesIO(data))


def raw_name_tar(path: Path, members: list[tuple[bytes, bytes]]) -> None:
    """A GNU tar whose member names are raw bytes (possibly not UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def restore_file(path: Path):
    """Snapshot a file's bytes and times; calling the result puts both back (so its recorded identity holds)."""
    import os

    data, st = path.read_bytes(), path.stat()

    def restore() -> None:
        path.write_bytes(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    return restore
