"""One streaming pass over a run's scores: counts, every score, errors by kind, the top flagged and
near-threshold rows, uniform samples of flagged and kept rows (embeddings, captions), uid lists, and
the flagged / keep Parquet tables written as the rows go by. Of each row the pass keeps only its score
(4 bytes) and, with uids, its uid (16 bytes); everything else is bounded samples."""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.job.outputs import embedding_rows, error_kind
from pipeline.report import datacomp
from pipeline.report.load import RunFiles, batches
from pipeline.storage import AtomicFile

LIST_COLUMNS = ("key", "shard", "index", "score")      # flagged.parquet / keep.parquet
SAMPLE_CAP = 10_000          # rows per uniform sample (the cluster finder's exact kNN stays seconds)
TOP = 12                     # top flagged rows for the gallery
NEAR = 6                     # rows nearest the threshold for the gallery
EXAMPLES = 5                 # example keys per error kind
_LIST_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("index", pa.int32()),
                          ("score", pa.float32())])


class Sample:
    """A uniform sample of at most `cap` rows of a stream: the rows with the smallest random priorities."""

    def __init__(self, cap: int, seed: int):
        self.cap = cap
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.priority = np.empty(0)
        self.cols: dict[str, np.ndarray] = {}

    def add(self, cols: dict[str, np.ndarray]) -> None:
        """Offer rows (equal-length columns) to the sample."""
        n = len(next(iter(cols.values())))
        if n == 0:
            return
        self.seen += n
        priority = np.concatenate([self.priority, self.rng.random(n)])
        merged = {k: np.concatenate([self.cols[k], v]) if k in self.cols else v for k, v in cols.items()}
        if len(priority) > self.cap:
            keep = np.argpartition(priority, self.cap)[: self.cap]
            priority, merged = priority[keep], {k: v[keep] for k, v in merged.items()}
        self.priority, self.cols = priority, merged


@dataclass
class Scan:
    """What the pass gathered."""

    threshold: float
    read: int = 0
    scored: int = 0
    flagged: int = 0
    errored: int = 0
    scores: list[np.ndarray] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    error_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    top: list[tuple] = field(default_factory=list)           # heap of (score, n, row)
    near: list[tuple] = field(default_factory=list)          # heap of (-|score - threshold|, n, row)
    flagged_sample: Sample = field(default_factory=lambda: Sample(SAMPLE_CAP, 1))
    kept_sample: Sample = field(default_factory=lambda: Sample(SAMPLE_CAP, 2))
    remove_uids: list[np.ndarray] = field(default_factory=list)     # (f0, f1) rows, pipeline.report.datacomp
    keep_uids: list[np.ndarray] = field(default_factory=list)
    uids_missing: int = 0
    _n: int = 0

    def all_scores(self) -> np.ndarray:
        """Every scored row's score (float32: 4 bytes a row are all the pass keeps of each row)."""
        return np.concatenate(self.scores) if self.scores else np.empty(0, np.float32)

    def uid_lists(self) -> dict[str, np.ndarray]:
        """The sorted DataComp uid lists by file name."""
        empty = np.empty(0, datacomp.UID_DTYPE)
        return {name: datacomp.sorted_uids(np.concatenate(parts) if parts else empty)
                for name, parts in (("keep_uids.npy", self.keep_uids), ("remove_uids.npy", self.remove_uids))}

    def _offer(self, heap: list, size: int, priority: float, row: dict) -> None:
        self._n += 1
        item = (priority, self._n, row)
        if len(heap) < size:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)


def _rows(batch: pa.RecordBatch, positions: np.ndarray, names: list[str]) -> list[dict]:
    sub = batch.select(names).take(pa.array(positions, pa.int64()))
    return sub.to_pylist()


def scan(run: RunFiles, threshold: float, flagged_file: AtomicFile, keep_file: AtomicFile,
         progress: bool = True) -> Scan:
    """Stream every row once; flagged and kept rows (key, shard, index, score) go to the two files."""
    extra = sorted(run.columns)
    names = ["key", "shard", "index", "status", "error", "score", "flagged", *extra]
    row_names = ["key", "shard", "index", "score", "flagged"] + (["caption"] if "caption" in extra else [])
    out = Scan(threshold=threshold)
    with pq.ParquetWriter(flagged_file.file, _LIST_SCHEMA, compression="zstd") as fw, \
            pq.ParquetWriter(keep_file.file, _LIST_SCHEMA, compression="zstd") as kw:
        for batch in batches(run, names, progress):
            ok = np.asarray(pc.equal(batch.column("status"), "ok").fill_null(False).to_numpy(zero_copy_only=False), bool)
            flagged = np.asarray(batch.column("flagged").fill_null(False).to_numpy(zero_copy_only=False), bool) & ok
            kept = ok & ~flagged
            score = np.asarray(batch.column("score").fill_null(np.nan).to_numpy(zero_copy_only=False), np.float32)
            out.read += batch.num_rows
            out.scored += int(ok.sum())
            out.flagged += int(flagged.sum())
            out.errored += int((~ok).sum())
            out.scores.append(score[ok])
            lists = pa.RecordBatch.from_arrays(
                [batch.column("key"), batch.column("shard"), batch.column("index").cast(pa.int32()),
                 batch.column("score").cast(pa.float32())], schema=_LIST_SCHEMA)
            fw.write_batch(lists.filter(pa.array(flagged)))
            kw.write_batch(lists.filter(pa.array(kept)))
            _errors(out, batch, ~ok)
            _candidates(out, batch, score, ok, flagged, row_names)
            _samples(out, batch, flagged, kept, extra)
            if "uid" in extra:
                _uids(out, batch, kept)
    return out


def _errors(out: Scan, batch: pa.RecordBatch, bad: np.ndarray) -> None:
    if not bad.any():
        return
    pos = np.flatnonzero(bad)
    for row in _rows(batch, pos, ["key", "shard", "error"]):
        kind = error_kind(row["error"]) or "unknown"
        out.errors[kind] += 1
        if len(out.error_examples[kind]) < EXAMPLES:
            out.error_examples[kind].append(f"{row['shard']} {row['key']}: {row['error']}")


def _candidates(out: Scan, batch: pa.RecordBatch, score: np.ndarray, ok: np.ndarray, flagged: np.ndarray,
                names: list[str]) -> None:
    """Offer this batch's best rows to the top-flagged and near-threshold lists."""
    fpos = np.flatnonzero(flagged)
    if len(fpos):
        best = fpos[np.argsort(-score[fpos])[:TOP]]
        for p, row in zip(best, _rows(batch, best, names)):
            out._offer(out.top, TOP, float(score[p]), row)
    opos = np.flatnonzero(ok)
    if len(opos):
        gap = np.abs(score[opos] - out.threshold)
        best = opos[np.argsort(gap)[:NEAR]]
        for p, row in zip(best, _rows(batch, best, names)):
            out._offer(out.near, NEAR, -abs(float(score[p]) - out.threshold), row)


def _samples(out: Scan, batch: pa.RecordBatch, flagged: np.ndarray, kept: np.ndarray, extra: list[str]) -> None:
    for sample, mask in ((out.flagged_sample, flagged), (out.kept_sample, kept)):
        if not mask.any():
            continue
        cols = {"key": np.asarray(batch.column("key").filter(pa.array(mask)).to_pylist(), object)}
        if "caption" in extra:
            cols["caption"] = np.asarray(batch.column("caption").filter(pa.array(mask)).to_pylist(), object)
        if "embedding" in extra:
            cols["embedding"] = embedding_rows(batch.column("embedding"), mask)
        sample.add(cols)


def _uids(out: Scan, batch: pa.RecordBatch, kept: np.ndarray) -> None:
    """Kept rows' uids go to the keep list, flagged and errored rows' to the removal list (16 bytes a row)."""
    col = batch.column("uid")
    present = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)
    out.uids_missing += int((~present).sum())
    for target, mask in ((out.keep_uids, kept & present), (out.remove_uids, ~kept & present)):
        if mask.any():
            target.append(datacomp.uid_pairs(str(u) for u in col.filter(pa.array(mask)).to_pylist()))
