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
