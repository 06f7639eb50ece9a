import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipeline.corpus.decode import DecodeError, caption, decode_image, load_sample_image
from pipeline.corpus.reader import iter_shard
from pipeline.corpus.shards import common_root, expand_shards, shard_stem
from pipeline.corpus.writer import TarSink, write_tar


def _jpeg(color=(200, 10, 10), size=(20, 12), mode="RGB", fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


def test_expand_brace_glob_dir_and_stems(tmp_path):
    for sub in ("a", "b"):
        for i in range(3):
            write_tar(str(tmp_path / sub / f"{i:06d}.tar"), [(f"k{i}.txt", b"x")])
    by_dir = expand_shards(str(tmp_path))
    assert len(by_dir) == 6
    assert expand_shards(str(tmp_path / "a" / "{000000..000001}.tar")) == by_dir[:2]
    assert expand_shards(str(tmp_path / "*" / "000002.tar")) == [by_dir[2], by_dir[5]]
    root = common_root(by_dir)
    assert [shard_stem(u, root) for u in (by_dir[0], by_dir[3])] == ["a/000000", "b/000000"]
    assert shard_stem(by_dir[0], common_root([by_dir[0]])) == "000000"
    with pytest.raises(ValueError, match="pipe:"):
        expand_shards("pipe:curl http://x/{0..1}.tar")
    with pytest.raises(FileNotFoundError):
        expand_shards(str(tmp_path / "missing.tar"))


def test_writer_round_trip_keeps_names_bytes_order(tmp_path):
    members = [("s1.jpg", _jpeg()), ("s1.txt", "caption é".encode()), ("d/s2.jpg", _jpeg((1, 2, 3))), ("d/s2.json", b"{}")]
    url = str(tmp_path / "out" / "x.tar")
    write_tar(url, members)
    samples = list(iter_shard(url))
    assert [(s.key, s.index, s.error) for s in samples] == [("s1", 0, None), ("d/s2", 1, None)]
    assert [m for s in samples for m in s.members] == members
    assert caption(samples[0].fields) == "caption é"
    with pytest.raises(ValueError, match="unsafe"):
        with TarSink(str(tmp_path / "bad.tar")) as sink:
            sink.add("../escape.jpg", b"x")
    assert not (tmp_path / "bad.tar").exists()
    assert [p.name for p in (tmp_path).iterdir() if p.name.endswith(".tmp")] == []


def test_truncated_tar_yields_readable_samples_and_a_loss_record(tmp_path):
    url = str(tmp_path / "t.tar")
    write_tar(url, [(f"s{i}.jpg", _jpeg(size=(64, 64))) for i in range(10)])
    data = open(url, "rb").read()
    open(url, "wb").write(data[: len(data) // 2])
    samples = list(iter_shard(url))
    ok = [s for s in samples if s.error is None]
    assert 2 <= len(ok) < 10
    assert samples[-1].key == "__tar__" and samples[-1].error.startswith("tar:")
    assert [s.index for s in samples] == list(range(len(samples)))


def test_decode_modes_and_errors():
    for mode, color in [("L", 128), ("P", 3), ("RGBA", (10, 20, 30, 0)), ("CMYK", (0, 255, 0, 0)), ("I;16", 40000)]:
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        img = decode_image(_jpeg(color, mode=mode, fmt=fmt))
        assert img.mode == "RGB", mode
    assert decode_image(_jpeg(40000, mode="I;16", fmt="PNG")).getpixel((0, 0))[0] == pytest.approx(156, abs=1)
    with pytest.raises(DecodeError, match="^decode:"):
        decode_image(b"not an image")
    with pytest.raises(DecodeError, match="^missing:"):
        load_sample_image({"txt": b"hi"}, 32)
    with pytest.raises(DecodeError, match="^decode: zero-byte"):
        load_sample_image({"jpg": b""}, 32)
    arr = load_sample_image({"jpg": _jpeg(size=(80, 40))}, 32)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8


def test_decompression_bomb_is_an_error_not_a_crash():
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG")  # 81 MP > the 64 MP guard
    with pytest.raises(DecodeError, match="^bomb:"):
        decode_image(buf.getvalue())
