"""One shard end to end, without Ray: score it (read, decode, `Scorer.score`, route, write Parquet,
publish the tars, stats last), or re-split it from its stored scores (`finalize_table`: the gmm
policy, the embedding detectors' phase and apply_threshold)."""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline.corpus.decode import DecodeError, caption, error_text, load_sample_image
from pipeline.corpus.limits import Limits
from pipeline.corpus.reader import Sample, iter_shard
from pipeline.job import outputs as O
from pipeline.job.sources import source_info


@dataclass
class ShardTask:
    """One shard to score and the run-wide settings it is scored with."""

    url: str
    stem: str
    out: str
    threshold: float            # NaN in the score-only phase of a run-wide policy (gmm)
    finalize: bool = True       # False: write only scores/<stem>.parquet (gmm phase 1)
    store_embeddings: bool = False
    images: tuple[str, ...] = ()  # image detectors scored too, each into the column of its name (spec.IMAGE_DETECTORS)
    carry_fields: tuple[str, ...] = ()
    limits: Limits = Limits()


@dataclass
class _Chunk:
    samples: list[Sample]
    images: np.ndarray | None        # (n_ok, S, S, 3) uint8
    ok: list[int]                    # positions in `samples` that decoded
    errors: dict[int, str]           # position -> `kind: detail`
    read_s: float


def shard_samples(url: str, limits: Limits = Limits()) -> Iterator[Sample]:
    """The tolerant reader's samples, plus an `empty:` error record for a tar that holds no samples
    (so an empty shard is accounted for by a row). Used by scoring and by re-splitting alike."""
    n = 0
    for s in iter_shard(url, **limits.reader()):
        n += 1
        yield s
    if n == 0:
        yield Sample(url, "__tar__", 0, error="empty: the tar holds no samples")


def _prepare(sample: Sample, size: int, limits: Limits) -> tuple[np.ndarray | None, str | None]:
    if sample.error is not None:
        return None, sample.error
    try:
        return load_sample_image(sample.fields, size, **limits.decoder()), None
    except DecodeError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - never let one sample kill the shard
        return None, f"decode: {type(e).__name__}: {error_text(e)}"


def _carried(sample: Sample, names: tuple[str, ...]) -> dict:
    """The `names` fields of the sample's `.json` (None where absent or the JSON is unreadable);
    values that no column type holds are made to fit by `outputs.rows_table`."""
    if not names:
        return {}
    raw = sample.fields.get("json")
    try:
        meta = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):    # UnicodeDecodeError is a ValueError; RecursionError: deep nesting
        meta = {}
    return {n: meta.get(n) for n in names} if isinstance(meta, dict) else {}


def _chunks(url: str, size: int, batch_size: int, pool: ThreadPoolExecutor, limits: Limits) -> Iterator[_Chunk]:
    """Read + decode, `batch_size` samples at a time (errors included), decode spread over `pool`."""
    it = shard_samples(url, limits)
    while True:
        t0 = time.perf_counter()
        samples = []
        for s in it:
            samples.append(s)
            if len(samples) >= batch_size:
                break
        if not samples:
            return
        results = list(pool.map(lambda s: _prepare(s, size, limits), samples))
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
    source = _source(task.url)
    size = scorer.work_size
    rows: list[O.Row] = []
    router = O.ShardRouter(task.out, task.stem) if task.finalize else None
    read_s = score_s = 0.0
    embed_dim = None
    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for ch in _prefetch(_chunks(task.url, size, batch_size, pool, task.limits)):
                read_s += ch.read_s
                scores = emb = difficulty = None
                probed: dict[str, np.ndarray] = {}
                if ch.ok:
                    t0 = time.perf_counter()
                    res = scorer.score(ch.images, [ch.samples[i].key for i in ch.ok], task.images)
                    score_s += time.perf_counter() - t0
                    scores, emb, difficulty, probed = res.scores, res.embeddings, res.difficulty, res.images
                    embed_dim = emb.shape[1]
                pos = {p: j for j, p in enumerate(ch.ok)}
                for p, s in enumerate(ch.samples):
                    j = pos.get(p)
                    status = "ok" if j is not None else "error"
                    score = float(scores[j]) if j is not None else None
                    err = None if j is not None else ch.errors[p]
                    rows.append(O.Row(
                        key=s.key, shard=task.url, index=s.index, status=status, error=err, score=score,
                        difficulty=float(difficulty[j]) if j is not None else None,
                        images={n: float(v[j]) for n, v in probed.items()} if j is not None else {},
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
                             carry_fields=task.carry_fields, images=task.images)
        parquet_sha = O.write_parquet(O.scores_url(task.out, task.stem), table)
        if router is None:
            return {"stem": task.stem, "shard": task.url, "read": len(rows), "scored": len(rows),
                    "seconds": time.perf_counter() - t_start}
        checksums = {"scores": parquet_sha, **router.publish()}
        counts, router = router, None
        write_s = time.perf_counter() - t0
    except BaseException:
        _clean_up(router, task.out, task.stem)
        raise
    timings = {"read_decode_s": read_s, "score_s": score_s, "write_s": write_s,
               "total_s": time.perf_counter() - t_start}
    rule = O.FlagRule.dede(task.threshold)
    return finish_stats(task, counts, rule, O.flag_counts(table, rule), scorer.decoder_sha256, timings, checksums,
                        source)


def _source(url: str) -> dict | None:
    """The shard's size / mtime / ETag before it is read (None when it cannot be looked up)."""
    try:
        return source_info(url)
    except OSError:
        return None


def _clean_up(router: O.ShardRouter | None, out: str, stem: str) -> None:
    """After a failed write: drop the unpublished tars and every temp file of the shard."""
    try:
        if router is not None:
            router.discard()
    finally:
        O.remove_temp_files(out, stem)


def ray_node_id() -> str | None:
    """The id of the Ray node this process runs on; None in a process that is not connected to Ray."""
    ray = sys.modules.get("ray")        # never imported here: a process without Ray is not on a node
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None


def finish_stats(task: ShardTask, counts, rule: O.FlagRule, flagged_by: dict[str, int | None], decoder_sha256: str,
                 timings: dict, checksums: dict, source: dict | None) -> dict:
    """Write the shard's stats (last of its files: their presence means the shard is done), naming the
    Ray node that wrote them."""
    stats = O.shard_stats(url=task.url, stem=task.stem, router=counts, rule=rule, flagged_by=flagged_by,
                          decoder_sha256=decoder_sha256, timings=timings, checksums=checksums, source=source,
                          node_id=ray_node_id())
    O.write_stats(task.out, task.stem, stats)
    return stats


def finalize_from_scores(out: str, url: str, stem: str, rule: O.FlagRule, dest: str | None = None,
                         limits: Limits = Limits()) -> dict:
    """Apply `rule` to a shard's stored scores in `out` without re-scoring (`finalize_table`). Used by
    gmm runs and apply_threshold."""
    return finalize_table(out, url, stem, O.read_parquet(O.scores_url(out, stem)), rule, dest, limits)


def finalize_table(out: str, url: str, stem: str, table, rule: O.FlagRule, dest: str | None = None,
                   limits: Limits = Limits()) -> dict:
    """Apply `rule` to a shard's scores table: its threshold/flagged columns recomputed from the rule's
    column, the source shard re-read and routed to clean/quarantine (the same ShardRouter the scoring
    path uses), stats last; all written to `dest` (default `out`). `limits` must be the run's, so the
    re-read sees the same samples."""
    dest = dest or out
    t_start = time.perf_counter()
    source = _source(url)
    table = O.rethreshold(table, rule)
    sha = table.column("decoder_sha256")[0].as_py() if table.num_rows else ""
    router = None
    try:
        router = O.route_from_table(dest, stem, url, table, rule, shard_samples(url, limits))
        parquet_sha = O.write_parquet(O.scores_url(dest, stem), table)
        checksums = {"scores": parquet_sha, **router.publish()}
    except BaseException:
        _clean_up(router, dest, stem)
        raise
    task = ShardTask(url=url, stem=stem, out=dest, threshold=rule.threshold, limits=limits)
    return finish_stats(task, router, rule, O.flag_counts(table, rule), sha,
                        {"write_s": time.perf_counter() - t_start, "total_s": time.perf_counter() - t_start},
                        checksums, source)
