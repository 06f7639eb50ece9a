"""Score one shard end to end: stream it, decode in a thread pool, score through `Scorer.score` in
batches, route samples to clean/quarantine, then write Parquet, publish the tars, and write stats last.

Runs inside a Ray actor (pipeline.job.actors) but has no Ray dependency, so it is testable alone.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline.corpus.decode import DecodeError, caption, load_sample_image
from pipeline.corpus.reader import Sample, iter_shard
from pipeline.job import outputs as O


@dataclass
class ShardTask:
    url: str
    stem: str
    out: str
    threshold: float            # NaN in the score-only phase of a run-wide policy (gmm)
    finalize: bool = True       # False: write only scores/<stem>.parquet (gmm phase 1)
    store_embeddings: bool = False
    carry_fields: tuple[str, ...] = ()


@dataclass
class _Chunk:
    samples: list[Sample]
    images: np.ndarray | None        # (n_ok, S, S, 3) uint8
    ok: list[int]                    # positions in `samples` that decoded
    errors: dict[int, str]           # position -> `kind: detail`
    read_s: float


def shard_samples(url: str) -> Iterator[Sample]:
    """The tolerant reader's samples, plus an `empty:` error record for a tar that holds no samples
    (so an empty shard is accounted for by a row). Used by scoring and by re-splitting alike."""
    n = 0
    for s in iter_shard(url):
        n += 1
        yield s
    if n == 0:
        yield Sample(url, "__tar__", 0, error="empty: the tar holds no samples")


def _prepare(sample: Sample, size: int) -> tuple[np.ndarray | None, str | None]:
    if sample.error is not None:
        return None, sample.error
    try:
        return load_sample_image(sample.fields, size), None
    except DecodeError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - never let one sample kill the shard
        return None, f"decode: {type(e).__name__}: {e}"


def _carried(sample: Sample, names: tuple[str, ...]) -> dict:
    if not names:
        return {}
    raw = sample.fields.get("json")
    try:
        meta = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        meta = {}
    return {n: meta.get(n) for n in names} if isinstance(meta, dict) else {}


def _chunks(url: str, size: int, batch_size: int, pool: ThreadPoolExecutor) -> Iterator[_Chunk]:
    """Read + decode, `batch_size` samples at a time (errors included), decode spread over `pool`."""
    it = shard_samples(url)
    while True:
        t0 = time.perf_counter()
        samples = []
        for s in it:
            samples.append(s)
            if len(samples) >= batch_size:
                break
        if not samples:
            return
        results = list(pool.map(lambda s: _prepare(s, size), samples))
        ok = [i for i, (img, _) in enumerate(results) if img is not None]
        errors = {i: err for i, (img, err) in enumerate(results) if img is None}
        images = np.stack([results[i][0] for i in ok]) if ok else None
        yield _Chunk(samples, images, ok, errors, time.perf_counter() - t0)


def _prefetch(gen: Iterator[_Chunk], depth: int = 2) -> Iterator[_Chunk]:
    """Run `gen` in a background thread so reading/decoding overlaps scoring."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)

    th = threading.Thread(target=worker, daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def score_shard(scorer, task: ShardTask, batch_size: int = 256, threads: int = 1) -> dict:
    """Score and write one shard. Returns its stats (or, with finalize=False, a score-only summary)."""
    t_start = time.perf_counter()
    size = scorer.work_size
    rows: list[O.Row] = []
    router = O.ShardRouter(task.out, task.stem) if task.finalize else None
    read_s = score_s = 0.0
    embed_dim = None
    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for ch in _prefetch(_chunks(task.url, size, batch_size, pool)):
                read_s += ch.read_s
                scores = emb = None
                if ch.ok:
                    t0 = time.perf_counter()
                    res = scorer.score(ch.images, [ch.samples[i].key for i in ch.ok])
                    score_s += time.perf_counter() - t0
                    scores, emb = res.scores, res.embeddings
                    embed_dim = emb.shape[1]
                pos = {p: j for j, p in enumerate(ch.ok)}
                for p, s in enumerate(ch.samples):
                    j = pos.get(p)
                    status = "ok" if j is not None else "error"
                    score = float(scores[j]) if j is not None else None
                    err = None if j is not None else ch.errors[p]
                    rows.append(O.Row(
                        key=s.key, shard=task.url, index=s.index, status=status, error=err, score=score,
                        caption=caption(s.fields) if s.members else None,
                        embedding=emb[j] if (j is not None and task.store_embeddings) else None,
                        carried=_carried(s, task.carry_fields)))
                    if router is not None:
                        router.add(s, status, err, score, task.threshold)
        t0 = time.perf_counter()
        if task.store_embeddings and embed_dim is None:
            embed_dim = int(getattr(scorer.encoder, "embed_dim", 0)) or None
        table = O.rows_table(rows, task.threshold, scorer.decoder_sha256,
                             embed_dim=embed_dim if task.store_embeddings else None,
                             carry_fields=task.carry_fields)
        parquet_sha = O.write_parquet(O.scores_url(task.out, task.stem), table)
        if router is None:
            return {"stem": task.stem, "shard": task.url, "read": len(rows), "scored": len(rows),
                    "seconds": time.perf_counter() - t_start}
        checksums = {"scores": parquet_sha, **router.publish()}
        counts, router = router, None
        write_s = time.perf_counter() - t0
    except BaseException:
        if router is not None:
            router.discard()
        raise
    timings = {"read_decode_s": read_s, "score_s": score_s, "write_s": write_s,
               "total_s": time.perf_counter() - t_start}
    return finish_stats(task, counts, scorer.decoder_sha256, timings, checksums)


def finish_stats(task: ShardTask, counts, decoder_sha256: str, timings: dict, checksums: dict) -> dict:
    stats = O.shard_stats(url=task.url, stem=task.stem, router=counts, threshold=task.threshold,
                          decoder_sha256=decoder_sha256, timings=timings, checksums=checksums)
    O.write_stats(task.out, task.stem, stats)
    return stats


def finalize_from_scores(out: str, url: str, stem: str, threshold: float) -> dict:
    """Apply `threshold` to a shard's stored scores without re-scoring: rewrite its Parquet's
    threshold/flagged columns, re-read the source shard and route it to clean/quarantine (the same
    ShardRouter the scoring path uses), then write its stats. Used by gmm runs and apply_threshold."""
    t_start = time.perf_counter()
    table = O.rethreshold(O.read_parquet(O.scores_url(out, stem)), threshold)
    sha = table.column("decoder_sha256")[0].as_py() if table.num_rows else ""
    router = O.route_from_table(out, stem, url, table, threshold, shard_samples(url))
    try:
        parquet_sha = O.write_parquet(O.scores_url(out, stem), table)
        checksums = {"scores": parquet_sha, **router.publish()}
    except BaseException:
        router.discard()
        raise
    task = ShardTask(url=url, stem=stem, out=out, threshold=threshold)
    return finish_stats(task, router, sha, {"write_s": time.perf_counter() - t_start,
                                            "total_s": time.perf_counter() - t_start}, checksums)
