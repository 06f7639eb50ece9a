"""Output files of a scoring run: their paths, the scores Parquet, the clean/quarantine routing,
per-shard stats, and the sweep of temp files a failed write left behind."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

import fsspec
import fsspec.implementations.local
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.corpus.reader import Sample, _KEY_RE, unsafe_name, valid_utf8
from pipeline.corpus.writer import TarSink
from pipeline.job.jsonfile import write_json
from pipeline.storage import temp_prefix, write_bytes_atomic

CORE_COLUMNS = ("key", "shard", "index", "status", "error", "score", "difficulty", "threshold", "flagged", "decoder_sha256")
REASON_SUFFIX = "dede_reason.json"
STATS_VERSION = 1
SHARD_FOLDERS = {"scores": "parquet", "clean": "tar", "quarantine": "tar", "stats": "json"}   # folder -> suffix
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")     # pipeline.storage's temp names


def join(out: str, *parts: str) -> str:
    return "/".join([out.rstrip("/"), *parts])


def scores_url(out: str, stem: str) -> str:
    return join(out, "scores", f"{stem}.parquet")


def clean_url(out: str, stem: str) -> str:
    return join(out, "clean", f"{stem}.tar")


def quarantine_url(out: str, stem: str) -> str:
    return join(out, "quarantine", f"{stem}.tar")


def stats_url(out: str, stem: str) -> str:
    return join(out, "stats", f"{stem}.json")


def run_url(out: str) -> str:
    return join(out, "run.json")


def error_kind(error: str | None) -> str | None:
    return None if error is None else error.split(":", 1)[0].strip() or "unknown"


# ---------------------------------------------------------------------------------------------
# Rows and the Parquet table
# ---------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One sample's result. `flagged`/`threshold` are filled by `decide`."""

    key: str
    shard: str
    index: int
    status: str                      # ok | error
    error: str | None = None
    score: float | None = None
    difficulty: float | None = None
    images: dict[str, float] = field(default_factory=dict)   # image detector -> its score
    caption: str | None = None
    embedding: np.ndarray | None = None
    carried: dict[str, Any] = field(default_factory=dict)


def decide(score: float | None, status: str, threshold: float) -> bool:
    """flagged = scored and score > threshold; errors are never flagged (they are quarantined)."""
    return status == "ok" and score is not None and not math.isnan(threshold) and float(score) > threshold


@dataclass(frozen=True)
class FlagRule:
    """What sets `flagged`: the flag-by detector's score column over its threshold (NaN in a score-only
    phase: nothing flagged). `detectors`: every computed detector's (column, threshold at the run's
    policy, None where the policy has none for it); the stats count what each would flag."""

    threshold: float
    column: str = "score"
    by: str = "dede"
    detectors: dict[str, tuple[str, float | None]] = field(default_factory=dict)

    @classmethod
    def dede(cls, threshold: float) -> FlagRule:
        """DeDe's score over `threshold`, the only detector (the default run)."""
        return cls(threshold, "score", "dede", {"dede": ("score", threshold)})


def flag_counts(table: pa.Table, rule: FlagRule) -> dict[str, int | None]:
    """By detector: its ok rows whose score is over its threshold (None without a threshold)."""
    ok = np.asarray(table.column("status").to_numpy(zero_copy_only=False) == "ok", bool)
    out = {}
    for name, (col, threshold) in rule.detectors.items():
        if threshold is None:
            out[name] = None
            continue
        values = np.asarray(table.column(col).to_numpy(zero_copy_only=False), np.float64)
        with np.errstate(invalid="ignore"):
            out[name] = int((ok & (values > threshold)).sum()) if not math.isnan(threshold) else 0
    return out


def _int64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63


def _carry_array(values: list[Any]) -> pa.Array:
    """A carried `.json` field: bool / int64 / float64 when every present value has that type, else
    string. A value no such column holds exactly (an integer outside int64, a string with a lone
    surrogate escape) makes the column string and is carried as its JSON text: nothing is rounded,
    and the sample stays ok."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(_int64(v) for v in present):
        return pa.array(values, pa.int64())
    if present and all(_int64(v) or isinstance(v, float) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else v if isinstance(v, str) and valid_utf8(v)
                     else json.dumps(v, sort_keys=True) for v in values], pa.string())


def rows_table(rows: list[Row], threshold: float, decoder_sha256: str, *, captions: bool = True,
               embed_dim: int | None = None, carry_fields: tuple[str, ...] = (), images: tuple[str, ...] = ()) -> pa.Table:
    """Rows -> the scores table (schema: schemas/scores.parquet.json); `images`: with a column of each of these image
    detectors' scores."""
    cols: dict[str, pa.Array] = {
        "key": pa.array([r.key for r in rows], pa.string()),
        "shard": pa.array([r.shard for r in rows], pa.string()),
        "index": pa.array([r.index for r in rows], pa.int32()),
        "status": pa.array([r.status for r in rows], pa.string()),
        "error": pa.array([r.error for r in rows], pa.string()),
        "score": pa.array([r.score for r in rows], pa.float32()),
        "difficulty": pa.array([r.difficulty for r in rows], pa.float32()),
        "threshold": pa.array([threshold] * len(rows), pa.float32()),
        "flagged": pa.array([decide(r.score, r.status, threshold) for r in rows], pa.bool_()),
        "decoder_sha256": pa.array([decoder_sha256] * len(rows), pa.string()),
    }
    for name in images:
        cols[name] = pa.array([r.images.get(name) for r in rows], pa.float32())
    if captions:
        cols["caption"] = pa.array([r.caption for r in rows], pa.string())
    if embed_dim is not None:
        flat = np.zeros((len(rows), embed_dim), np.float16)
        valid = np.zeros(len(rows), bool)
        for i, r in enumerate(rows):
            if r.embedding is not None:
                flat[i] = r.embedding
                valid[i] = True
        values = pa.array(flat.reshape(-1), pa.float16())
        arr = pa.FixedSizeListArray.from_arrays(values, embed_dim)
        if not valid.all():
            arr = pa.FixedSizeListArray.from_arrays(values, embed_dim, mask=pa.array(~valid))
        cols["embedding"] = arr
    for name in carry_fields:
        cols[name] = _carry_array([r.carried.get(name) for r in rows])
    return pa.table(cols)


def embedding_rows(col: pa.Array | pa.ChunkedArray, mask: np.ndarray | pa.Array | None = None) -> np.ndarray:
    """The rows of the fixed-size-list `embedding` column selected by `mask` (all rows without one), as
    (n, d) float16; every selected row must hold an embedding."""
    sub = col if mask is None else col.filter(mask if isinstance(mask, (pa.Array, pa.ChunkedArray)) else pa.array(mask))
    flat = pc.list_flatten(sub).to_numpy(zero_copy_only=False)
    return np.asarray(flat, np.float16).reshape(-1, col.type.list_size)


def rethreshold(table: pa.Table, rule: FlagRule) -> pa.Table:
    """The same rows with the rule's threshold and the flagged column recomputed from the stored scores
    of its column."""
    scores = table.column(rule.column).to_pylist()
    status = table.column("status").to_pylist()
    flagged = pa.array([decide(s, st, rule.threshold) for s, st in zip(scores, status)], pa.bool_())
    thr = pa.array([rule.threshold] * table.num_rows, pa.float32())
    table = table.set_column(table.schema.get_field_index("threshold"), pa.field("threshold", pa.float32()), thr)
    return table.set_column(table.schema.get_field_index("flagged"), pa.field("flagged", pa.bool_()), flagged)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_parquet(url: str, table: pa.Table) -> str:
    data = parquet_bytes(table)
    write_bytes_atomic(url, data)
    return hashlib.sha256(data).hexdigest()


def read_parquet(url: str) -> pa.Table:
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as f:
        return pq.read_table(f)


# ---------------------------------------------------------------------------------------------
# Clean / quarantine tars: the one routing code path (score_corpus and apply_threshold)
# ---------------------------------------------------------------------------------------------

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def _renamed_members(sample: Sample) -> tuple[str, list[tuple[str, bytes]], dict[str, str]]:
    """A safe key and member names for a sample whose names cannot be written as they are."""
    key = f"renamed_{sample.index:06d}"
    out, mapping, used = [], {}, set()
    for name, data in sample.members:
        m = _KEY_RE.match(name.replace("\\", "/"))
        suffix = _SAFE_CHARS.sub("_", m.group(2)) if m else "bin"
        suffix = suffix.strip(".") or "bin"
        cand, n = suffix, 1
        while cand.lower() in used or cand.lower() == REASON_SUFFIX:
            cand, n = f"{n}.{suffix}", n + 1
        used.add(cand.lower())
        new = f"{key}.{cand}"
        out.append((new, data))
        mapping[new] = name
    return key, out, mapping


class ShardRouter:
    """Routes a shard's samples, in order, to clean/<stem>.tar or quarantine/<stem>.tar.

    Kept samples are written with every member's original name and bytes. Flagged and unscoreable
    samples go to quarantine with an extra `<key>.dede_reason.json` member; samples whose member
    names are unsafe (`../`, absolute, backslash) or whose key was already written to this
    quarantine tar are renamed `renamed_<index>.<suffix>` and the reason records the original names.
    The tars become visible only on `publish()`.
    """

    def __init__(self, out: str, stem: str):
        self.clean = TarSink(clean_url(out, stem))
        self.quarantine = TarSink(quarantine_url(out, stem))
        self._qkeys: set[str] = set()
        self.kept = self.flagged = self.errored = 0
        self.errors: Counter = Counter()

    def add(self, sample: Sample, status: str, error: str | None, score: float | None, threshold: float,
            detector: str | None = None) -> None:
        """Route one sample; `score` and `threshold` are the flag-by detector's (`detector`, named in the
        reason when it is not DeDe)."""
        if sample.index is None:
            raise ValueError("sample without index")
        flagged = decide(score, status, threshold)
        if status == "ok" and not flagged:
            for name, data in sample.members:
                self.clean.add(name, data)
            self.kept += 1
            return
        if status == "ok":
            self.flagged += 1
            reason = {"reason": "flagged", "score": float(score), "threshold": float(threshold)}
            if detector is not None:
                reason["detector"] = detector
        else:
            self.errored += 1
            self.errors[error_kind(error)] += 1
            reason = {"reason": "error", "error": error}
        reason.update(shard=sample.shard, key=sample.key, index=sample.index)
        key, members = sample.key, list(sample.members)
        if (not key or unsafe_name(key) or key in self._qkeys or key.startswith("renamed_")
                or any(unsafe_name(n) or not _KEY_RE.match(n) or n.startswith(key + "." + REASON_SUFFIX)
                       for n, _ in members)):
            key, members, mapping = _renamed_members(sample)
            reason["renamed_from"] = mapping
            if not sample.members:
                reason["renamed_key_from"] = sample.key
        self._qkeys.add(key)
        for name, data in members:
            self.quarantine.add(name, data)
        self.quarantine.add(f"{key}.{REASON_SUFFIX}", json.dumps(reason, sort_keys=True, allow_nan=False).encode())

    def publish(self) -> dict[str, str]:
        """Publish both tars; returns their sha256."""
        self.clean.close()
        self.quarantine.close()
        return {"clean": self.clean.sha256, "quarantine": self.quarantine.sha256}

    def discard(self) -> None:
        """Drop both unpublished tars."""
        try:
            self.clean.discard()
        finally:
            self.quarantine.discard()


def route_from_table(out: str, stem: str, url: str, table: pa.Table, rule: FlagRule,
                     samples: Iterable[Sample]) -> ShardRouter:
    """Route a shard's samples using stored rows (matched by index; the key must agree) by the rule's
    column and threshold."""
    by_index = {}
    detector = None if rule.by == "dede" else rule.by
    for key, idx, status, error, score in zip(*(table.column(c).to_pylist() for c in
                                                 ("key", "index", "status", "error", rule.column))):
        by_index[idx] = (key, status, error, score)
    router = ShardRouter(out, stem)
    try:
        seen = 0
        for s in samples:
            row = by_index.get(s.index)
            if row is None or row[0] != s.key:
                raise RuntimeError(f"{url}: sample {s.index} ({s.key!r}) does not match the stored scores; "
                                   "the shard changed since it was scored")
            router.add(s, row[1], row[2], row[3], rule.threshold, detector)
            seen += 1
        if seen != len(by_index):
            raise RuntimeError(f"{url}: {seen} samples read but {len(by_index)} rows stored; the shard changed")
    except BaseException:
        router.discard()
        raise
    return router


# ---------------------------------------------------------------------------------------------
# Stats and run.json
# ---------------------------------------------------------------------------------------------

def _f32(value: float | None) -> float | None:
    return None if value is None else float(np.float32(value))


def shard_stats(*, url: str, stem: str, router: ShardRouter, rule: FlagRule, flagged_by: dict[str, int | None],
                decoder_sha256: str, timings: dict[str, float], checksums: dict[str, str], source: dict | None,
                node_id: str | None = None) -> dict:
    """stats/<stem>.json (schemas/stats.schema.json); `flagged_by`: `flag_counts` of the shard; `node_id`:
    the Ray node that wrote it (None outside Ray)."""
    read = router.kept + router.flagged + router.errored
    total = timings.get("total_s", 0.0)
    return {
        "version": STATS_VERSION,
        "shard": url,
        "stem": stem,
        "read": read,
        "kept": router.kept,
        "flagged": router.flagged,
        "errored": router.errored,
        "errors_by_kind": dict(sorted(router.errors.items())),
        "threshold": _f32(rule.threshold),
        "flag_by": rule.by,
        "detectors": {name: {"column": col, "threshold": _f32(t), "flagged": flagged_by[name]}
                      for name, (col, t) in rule.detectors.items()},
        "decoder_sha256": decoder_sha256,
        "timings": {k: round(float(v), 4) for k, v in timings.items()},
        "samples_per_s": round(read / total, 2) if total > 0 else None,
        "sha256": checksums,
        "source": source,
        "node_id": node_id,
    }


def write_stats(out: str, stem: str, stats: dict) -> None:
    write_json(stats_url(out, stem), stats)


def move(src: str, dst: str) -> None:
    """Put the file at `src` under the name `dst` (os.replace locally; copy + delete on object stores)."""
    fs, s = fsspec.core.url_to_fs(src)
    d = fsspec.core.url_to_fs(dst)[1]
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        os.makedirs(os.path.dirname(d), exist_ok=True)
        os.replace(s, d)
    else:
        fs.mv(s, d)


def remove_temp_files(out: str, stem: str | None = None) -> int:
    """Remove the temp files failed or killed writes left in a local --out (of one shard, or all);
    object stores never hold them. Returns how many were removed."""
    fs, path = fsspec.core.url_to_fs(out)
    if not isinstance(fs, fsspec.implementations.local.LocalFileSystem) or not os.path.isdir(path):
        return 0
    if stem is None:
        folders = [os.path.join(path, sub) for sub in SHARD_FOLDERS]
        found = [os.path.join(path, n) for n in os.listdir(path) if _TEMP_NAME.match(n)]
        for folder in folders:
            for d, _, names in os.walk(folder):
                found += [os.path.join(d, n) for n in names if _TEMP_NAME.match(n)]
    else:
        found = []
        for sub, suffix in SHARD_FOLDERS.items():
            d, base = os.path.split(os.path.join(path, sub, stem))
            if os.path.isdir(d):
                found += [os.path.join(d, n) for n in os.listdir(d)
                          if _TEMP_NAME.match(n) and n.startswith(temp_prefix(f"{base}.{suffix}"))]
    for p in found:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    return len(found)


def read_json(url: str) -> dict:
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def all_scores(out: str, stems: list[str], column: str = "score") -> np.ndarray:
    """Every ok score (of `column`, default DeDe's) of the given shards' Parquet files."""
    def one(stem: str) -> list[float]:
        fs, path = fsspec.core.url_to_fs(scores_url(out, stem))
        with fs.open(path, "rb") as f:
            t = pq.read_table(f, columns=["status", column])
        return [s for s, st in zip(t.column(column).to_pylist(), t.column("status").to_pylist())
                if st == "ok" and s is not None]

    with ThreadPoolExecutor(16) as pool:
        return np.asarray([s for part in pool.map(one, stems) for s in part], np.float64)


def totals(stats: Iterable[dict]) -> dict:
    t = {"shards": 0, "read": 0, "kept": 0, "flagged": 0, "errored": 0}
    kinds: Counter = Counter()
    for s in stats:
        t["shards"] += 1
        for k in ("read", "kept", "flagged", "errored"):
            t[k] += int(s[k])
        kinds.update(s["errors_by_kind"])
    t["errors_by_kind"] = dict(sorted(kinds.items()))
    return t


def summary_table(tot: dict, seconds: float, scored_samples: int, skipped: int = 0) -> str:
    """The short end-of-run table."""
    rate = scored_samples / seconds if seconds > 0 else 0.0
    lines = [
        f"{'shards':<16}{tot['shards']:>12}" + (f"   ({skipped} already done, skipped)" if skipped else ""),
        f"{'samples':<16}{tot['read']:>12}",
        f"{'kept':<16}{tot['kept']:>12}",
        f"{'flagged':<16}{tot['flagged']:>12}",
        f"{'errors':<16}{tot['errored']:>12}",
    ]
    for kind, n in tot["errors_by_kind"].items():
        lines.append(f"  {kind:<14}{n:>12}")
    lines.append(f"{'samples/s':<16}{rate:>12.1f}   ({scored_samples} samples in {seconds:.1f} s this run)")
    return "\n".join(lines)

