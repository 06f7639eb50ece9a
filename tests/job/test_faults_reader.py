"""Reading and decoding faults of issue 18, at reader / decoder / `score_shard` level (no Ray)."""
from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import random
import resource
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.corpus import decode
from pipeline.corpus.decode import DecodeError, decode_image, error_text, load_sample_image
from pipeline.corpus.reader import MAX_MEMBER_BYTES, iter_shard
from pipeline.corpus.shards import expand_shards
from pipeline.dede.scorer import ScoreOutput
from pipeline.errors import BadInput
from pipeline.job import outputs as O
from pipeline.job.shard import ShardTask, score_shard
from tests.job.faults import (archive_end, big_member_tar_gz, img_bytes, member_spans, raw_name_tar, raw_tar,
                              sample_members, strip_png, tar_bytes)

ROOT = Path(__file__).resolve().parents[2]


def _rows(url: str, **limits) -> list[tuple[str, str | None]]:
    return [(s.key, s.error) for s in iter_shard(url, **limits)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# 1. A tar cut anywhere is a loss record, never a silent end
# ---------------------------------------------------------------------------------------------

def test_cut_at_a_header_boundary_is_a_truncation_not_an_end(tmp_path):
    data = tar_bytes(sample_members(20))
    cut = next(off for name, off, _ in member_spans(data) if name == "s004.json")
    p = tmp_path / "cut.tar"
    p.write_bytes(data[:cut])
    rows = _rows(str(p))
    assert [k for k, e in rows if e is None] == ["s000", "s001", "s002", "s003"]
    assert rows[4][0] == "s004" and rows[4][1].startswith("tar: sample cut off")
    assert rows[5] == ("__tar__", f"tar: truncated at byte {cut} after 5 samples")
    assert len(rows) == 6


def test_complete_tars_plain_and_gzip_have_no_error(tmp_path):
    members = sample_members(5)
    for name, data in (("a.tar", tar_bytes(members)), ("a.tar.gz", tar_bytes(members, "gz"))):
        (tmp_path / name).write_bytes(data)
        samples = list(iter_shard(str(tmp_path / name)))
        assert [s.error for s in samples] == [None] * 5
        assert [m for s in samples for m in s.members] == members
    end = archive_end(tar_bytes(members))
    (tmp_path / "exact.tar").write_bytes(tar_bytes(members)[:end])   # no record padding: still complete
    assert [e for _, e in _rows(str(tmp_path / "exact.tar"))] == [None] * 5


def test_bad_header_and_lone_zero_block_are_errors(tmp_path):
    data = bytearray(tar_bytes(sample_members(4)))
    off = next(o for name, o, _ in member_spans(bytes(data)) if name == "s002.jpg")
    data[off: off + 512] = b"\x07" * 512
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    rows = _rows(str(tmp_path / "bad.tar"))
    assert rows[-1] == ("__tar__", f"tar: bad header at byte {off} after 2 samples")
    assert rows[-2][0] == "s001" and rows[-2][1].startswith("tar: sample cut off")
    data = tar_bytes(sample_members(2))
    end = archive_end(data)
    (tmp_path / "lone.tar").write_bytes(data[: end - 512])            # one zero block, then EOF
    assert _rows(str(tmp_path / "lone.tar"))[-1] == ("__tar__", f"tar: truncated at byte {end - 512} after 2 samples")


def test_gzip_shard_cut_is_a_truncation(tmp_path):
    data = tar_bytes(sample_members(6))
    cut = next(o for name, o, _ in member_spans(data) if name == "s003.jpg")
    (tmp_path / "hdr.tar.gz").write_bytes(gzip.compress(data[:cut]))   # compressed stream complete, tar cut
    rows = _rows(str(tmp_path / "hdr.tar.gz"))
    assert rows[-1] == ("__tar__", f"tar: truncated at byte {cut} after 3 samples")
    gz = tar_bytes(sample_members(6), "gz")
    (tmp_path / "gz.tar.gz").write_bytes(gz[: len(gz) // 2])         # compressed stream itself cut
    rows = _rows(str(tmp_path / "gz.tar.gz"))
    assert rows[-1][0] == "__tar__" and rows[-1][1].startswith("tar: truncated at byte ")
    assert rows[-2][1].startswith("tar: sample cut off")


def _check_cut(url: str, cut: int, spans: list[tuple[str, int, int]], members: dict[str, bytes]) -> None:
    samples = list(iter_shard(url))
    keys = [s.key for s in samples]
    assert len(keys) == len(set(keys)), (cut, keys)
    assert [s.index for s in samples] == list(range(len(samples)))
    assert samples[-1].key == "__tar__" and samples[-1].error.startswith("tar: "), (cut, samples[-1].error)
    for s in samples[:-1]:
        if s.error is None:   # yielded clean: every member of the sample is whole and in the cut part
            want = [(n, members[n]) for n, _, end in spans if n.startswith(s.key + ".")]
            assert s.members == want and all(end <= cut for n, _, end in spans if n.startswith(s.key + ".")), cut
    first_header = {}
    for n, off, _ in spans:
        first_header.setdefault(n.split(".")[0], off)
    ok = {s.key for s in samples if s.error is None}
    order = list(first_header)
    for k, nxt in zip(order, order[1:]):   # a sample followed by a whole header of the next one is intact
        if first_header[nxt] + 512 <= cut:
            assert k in ok, (cut, k, [(s.key, s.error) for s in samples])


def test_property_every_cut_is_accounted_for(tmp_path):
    members = sample_members(8)
    data = tar_bytes(members)
    spans, by_name, end = member_spans(data), dict(members), archive_end(data)
    rng = random.Random(18)
    cuts = sorted(set(range(0, end, 512)) | {rng.randrange(end) for _ in range(300)})
    url = str(tmp_path / "cut.tar")
    for cut in cuts:
        Path(url).write_bytes(data[:cut])
        _check_cut(url, cut, spans, by_name)
    gz_url = str(tmp_path / "cut.tar.gz")
    for cut in cuts[::10]:
        Path(gz_url).write_bytes(gzip.compress(data[:cut]))
        _check_cut(gz_url, cut, spans, by_name)


# ---------------------------------------------------------------------------------------------
# 2. The decode budget: aspect ratio and resized pixels, from the header
# ---------------------------------------------------------------------------------------------

def test_extreme_aspect_ratio_is_an_error_in_milliseconds():
    png = strip_png(1, 300_000)
    assert len(png) < 100_000
    rss, t0 = _rss_mb(), time.perf_counter()
    with pytest.raises(DecodeError,
                       match=r"^decode: image 1x300000 has aspect ratio 300000\.0:1, above the limit 50:1$"):
        load_sample_image({"png": png}, 32)
    assert time.perf_counter() - t0 < 0.5
    assert _rss_mb() - rss < 100
    with pytest.raises(DecodeError, match="aspect ratio"):
        decode_image(strip_png(1_000_000, 1))
    assert load_sample_image({"png": strip_png(400, 10)}, 32).shape == (32, 32, 3)   # 40:1 is within


def test_resized_pixels_and_input_pixels_budget():
    with pytest.raises(DecodeError, match=r"^decode: image 1000x40 resized to 25600x1024 has 26214400 pixels"):
        load_sample_image({"png": strip_png(1000, 40)}, 1024)
    assert load_sample_image({"png": strip_png(1000, 40)}, 1024, max_resized_pixels=30_000_000).shape == (1024, 1024, 3)
    with pytest.raises(DecodeError, match=r"^bomb: image 100x100 has 10000 pixels, above the limit 5000$"):
        load_sample_image({"png": strip_png(100, 100)}, 32, max_pixels=5000)
    with pytest.raises(DecodeError, match="above the limit 2:1"):
        load_sample_image({"png": strip_png(30, 10)}, 8, max_aspect=2)
    assert decode.MAX_ASPECT == 50 and decode.MAX_RESIZED_PIXELS > 1024 * 1024 * 10


# ---------------------------------------------------------------------------------------------
# 3. Member size and members-per-sample limits
# ---------------------------------------------------------------------------------------------

def test_oversized_member_is_skipped_unread(tmp_path):
    url = str(tmp_path / "big.tar.gz")
    big_member_tar_gz(Path(url), MAX_MEMBER_BYTES + 1)
    assert os.path.getsize(url) < 1_000_000
    rss = _rss_mb()
    samples = list(iter_shard(url))
    assert _rss_mb() - rss < 40
    assert [(s.key, s.error) for s in samples] == [
        ("a", None),
        ("big", f"limit: member 'big.png' is {MAX_MEMBER_BYTES + 1} bytes, above the limit {MAX_MEMBER_BYTES} "
                "(--max-member-bytes)"),
        ("z", None)]
    assert [n for n, _ in samples[1].members] == ["big.txt"]
    small = str(tmp_path / "small.tar.gz")
    big_member_tar_gz(Path(small), 5000)
    assert _rows(small, max_member_bytes=4999)[1][1].startswith("limit: member 'big.png' is 5000 bytes")
    assert _rows(small, max_member_bytes=5000)[1] == ("big", None)
    raw_tar(tmp_path / "pax.tar", [("a.txt", b"x"), ("l" * 300 + ".txt", b"y")])   # 300-char name: a pax header
    assert _rows(str(tmp_path / "pax.tar"), max_member_bytes=100) == [
        ("a", "tar: sample cut off (bad header at byte 1024)"),
        ("__tar__", "tar: bad header at byte 1024 after 1 samples")]


def test_members_per_sample_limit_and_linear_duplicate_check(tmp_path):
    many = [(f"k.{i}.bin", b"x") for i in range(100)] + [("z.jpg", img_bytes())]
    raw_tar(tmp_path / "many.tar", many)
    samples = list(iter_shard(str(tmp_path / "many.tar")))
    assert samples[0].error == "limit: sample has more than 64 members (--max-members)"
    assert len(samples[0].members) == 64 and samples[1].key == "z" and samples[1].error is None
    raw_tar(tmp_path / "huge.tar", [(f"k.{i}.bin", b"") for i in range(20_000)])
    t0 = time.perf_counter()
    samples = list(iter_shard(str(tmp_path / "huge.tar"), max_members=10**6))
    assert time.perf_counter() - t0 < 10
    assert len(samples) == 1 and len(samples[0].members) == 20_000 and samples[0].error is None
    raw_tar(tmp_path / "dup.tar", [("k.jpg", b"1"), ("k.txt", b"2"), ("k.JPG", b"3")])
    assert _rows(str(tmp_path / "dup.tar")) == [("k", "duplicate: member 'k.JPG' repeated in one sample")]


# ---------------------------------------------------------------------------------------------
# 4. Names and carried fields that used to fail the whole shard
# ---------------------------------------------------------------------------------------------

class FakeScorer:
    """Scores = mean pixel value: enough to drive `score_shard` without a model."""

    work_size = 32
    decoder_sha256 = "0" * 64

    def score(self, images: np.ndarray, keys, detectors=()) -> ScoreOutput:
        mean = images.reshape(len(images), -1).mean(1).astype(np.float32)
        return ScoreOutput(mean, np.zeros((len(images), 4), np.float16), mean)


def _score(url: str, out: Path, stem: str = "000000", carry: tuple[str, ...] = ()) -> tuple[dict, list[dict]]:
    stats = score_shard(FakeScorer(), ShardTask(url=url, stem=stem, out=str(out), threshold=1e9, carry_fields=carry))
    rows = O.read_parquet(O.scores_url(str(out), stem)).to_pylist()
    assert stats["read"] == len(rows) == stats["kept"] + stats["flagged"] + stats["errored"]
    return stats, rows


def test_non_utf8_member_names_are_sample_errors(tmp_path):
    jpg = img_bytes()
    raw_name_tar(tmp_path / "in.tar", [(b"ok.jpg", jpg), (b"caf\xe9.jpg", jpg), (b"caf\xe9.txt", b"c"),
                                       (b"k2.j\xffg", jpg), (b"last.jpg", jpg)])
    stats, rows = _score(str(tmp_path / "in.tar"), tmp_path / "out")
    assert [(r["key"], r["status"]) for r in rows] == [("ok", "ok"), ("caf\\xe9", "error"), ("k2", "error"),
                                                        ("last", "ok")]
    assert rows[1]["error"] == "name: member name 'caf\\\\xe9.jpg' is not valid UTF-8"
    assert rows[2]["error"].startswith("name: member name 'k2.j\\\\xffg'")
    assert stats["errored"] == 2
    quar = list(iter_shard(O.quarantine_url(str(tmp_path / "out"), "000000")))
    assert [s.error for s in quar] == [None, None] and all(s.key.startswith("renamed_") for s in quar)


def test_carried_values_that_fit_no_column_type(tmp_path):
    jpg = img_bytes()
    raw_tar(tmp_path / "in.tar", [
        ("a.jpg", jpg), ("a.json", json.dumps({"n": 2**64, "m": 1, "s": "x"}).encode()),
        ("b.jpg", jpg), ("b.json", b'{"n": 3, "m": -9223372036854775809, "s": "\\ud800"}'),
        ("c.jpg", jpg), ("c.json", b"[" * 100_000 + b"]" * 100_000),
        ("d.jpg", jpg), ("d.json", b'{"n": 1.5, "m": 2}')])
    stats, rows = _score(str(tmp_path / "in.tar"), tmp_path / "out", carry=("n", "m", "s"))
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert [r["n"] for r in rows] == ["18446744073709551616", "3", None, "1.5"]
    assert [r["m"] for r in rows] == ["1", "-9223372036854775809", None, "2"]
    assert [r["s"] for r in rows] == ["x", '"\\ud800"', None, None]


def test_non_utf8_shard_file_name_is_one_line_bad_input(tmp_path):
    raw_tar(tmp_path / "ok.tar", [("a.txt", b"x")])
    os.rename(tmp_path / "ok.tar", os.fsencode(tmp_path) + b"/caf\xe9.tar")
    with pytest.raises(BadInput, match=r"^shard file name .*caf\\xe9\.tar is not valid UTF-8; rename it$"):
        expand_shards(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# 5. Error texts are the same on every run
# ---------------------------------------------------------------------------------------------

def test_error_texts_hold_no_object_addresses():
    texts = set()
    for _ in range(2):
        with pytest.raises(DecodeError) as e:
            decode_image(b"not an image at all")
        texts.add(str(e.value))
    assert texts == {"decode: cannot identify image file"}
    assert error_text(ValueError(f"bad {io.BytesIO()!r} here")) == "bad <_io.BytesIO object> here"
    assert error_text(RuntimeError("")) == "RuntimeError"


# ---------------------------------------------------------------------------------------------
# 6. A 240-character shard name (the temp-file name must stay under 255 bytes)
# ---------------------------------------------------------------------------------------------

def test_240_character_shard_name(tmp_path):
    name = "n" * 236 + ".tar"
    raw_tar(tmp_path / "in" / name, sample_members(2))
    stats, rows = _score(str(tmp_path / "in" / name), tmp_path / "out", stem=name[:-4])
    assert [r["status"] for r in rows] == ["ok", "ok"] and stats["kept"] == 2


# ---------------------------------------------------------------------------------------------
# 7. jobs/ingest.py validates its numbers and its prefix
# ---------------------------------------------------------------------------------------------

def _ingest_main():
    spec = importlib.util.spec_from_file_location("ingest_cli", ROOT / "jobs" / "ingest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("flag, value, message", [
    ("--limit", "-3", "argument --limit: must be >= 1, got -3"),
    ("--shard-size", "0", "argument --shard-size: must be >= 1, got 0"),
    ("--prefix", "../x", "argument --prefix: '../x' is not a plain file-name prefix"),
    ("--prefix", "a/b", "argument --prefix: 'a/b' is not a plain file-name prefix"),
])
def test_ingest_refuses_bad_numbers_and_prefixes(tmp_path, capsys, flag, value, message):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.jpg").write_bytes(img_bytes())
    what = ["cifar10"] if flag == "--limit" else ["folder", str(tmp_path / "src")]
    assert _ingest_main()([*what, flag, value, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_ingest_folder_with_prefix(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for i in range(3):
        (tmp_path / "src" / f"{i}.jpg").write_bytes(img_bytes())
    assert _ingest_main()(["folder", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--shard-size", "2",
                           "--prefix", "p-"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p-000000.tar", "p-000001.tar"]
    assert [s.key for s in iter_shard(str(tmp_path / "out" / "p-000000.tar"))] == ["00000000", "00000001"]
