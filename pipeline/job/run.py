"""score_corpus's driver: check every input before Ray starts, claim --out, run the scoring actors over
the shards still to do (fixing a run-wide threshold first when the policy needs every score), then
write run.json. The stages and why they are shaped so: docs/architecture.md."""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec
import numpy as np

from pipeline.corpus.shards import common_root, shard_stem
from pipeline.dede.thresholds import ThresholdPolicy, parse_threshold, resolve_threshold
from pipeline.job import attempts
from pipeline.job import outputs as O
from pipeline.job.config import JobConfig
from pipeline.job.decoder import DecoderFacts, check_decoder
from pipeline.job.errors import JobError, ShardsFailed
from pipeline.job.inputs import resolve_inputs
from pipeline.job.ownership import claim_out
from pipeline.job.runfile import write_run_json
from pipeline.job.sources import changed

FORWARD_ENV = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "FSSPEC_")


def forwarded_env() -> dict[str, str]:
    """Non-secret storage settings the actors need (endpoints, regions, fsspec config)."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARD_ENV)}


@dataclass(frozen=True)
class Plan:
    """What a job will do, checked before Ray starts."""

    urls: list[str]
    stems: list[str]
    decoder: DecoderFacts
    policy: ThresholdPolicy
    threshold: float | None          # None: the policy needs all scores first (gmm)


def plan(cfg: JobConfig) -> Plan:
    """Check every input (options, threshold, decoder, shard URLs and their stems); JobError otherwise."""
    cfg.validate()
    policy = parse_threshold(cfg.threshold)
    decoder = check_decoder(cfg.decoder)
    threshold = None if policy.needs_scores else resolve_threshold(policy, decoder.calibration)
    urls = resolve_inputs(cfg.inputs, cfg.out)
    if not urls:
        raise JobError(f"no input shards outside --out {cfg.out}")
    urls = urls[: cfg.max_shards] if cfg.max_shards else urls
    root = common_root(urls)
    stems = [shard_stem(u, root) for u in urls]
    bad = [s for s in stems if s.startswith("../") or s.startswith("/")]
    if bad:
        raise JobError(f"cannot name outputs for shards outside the common root: {bad[:3]}")
    return Plan(urls, stems, decoder, policy, threshold)


def _check_failed(rows: list[dict]) -> int:
    """The samples read, or ShardsFailed naming the shards that failed."""
    failed = [r for r in rows if r.get("failed")]
    if failed:
        lines = "; ".join(f"{r['stem']}: {r['failed']}" for r in failed[:5])
        raise ShardsFailed(f"{len(failed)} of {len(rows)} shards failed ({lines}); the others are done, "
                           "rerun the same command to retry the failed ones")
    return sum(int(r["read"]) for r in rows)


def _finished(out: str, stems: list[str]) -> dict[str, dict]:
    """Stats of the shards already done, by stem."""
    fs, _ = fsspec.core.url_to_fs(out)
    fs.invalidate_cache()

    def one(stem: str) -> dict | None:
        try:
            return O.read_json(O.stats_url(out, stem))
        except FileNotFoundError:
            return None

    with ThreadPoolExecutor(16) as pool:
        return {s: st for s, st in zip(stems, pool.map(one, stems)) if st is not None}


def _forget_changed(cfg: JobConfig, p: Plan, done: dict[str, dict], log) -> None:
    """Drop from `done` (and remove the stats of) shards whose source changed since they were scored."""
    by_stem = dict(zip(p.stems, p.urls))
    with ThreadPoolExecutor(16) as pool:
        flags = list(pool.map(lambda s: changed(done[s].get("source"), by_stem[s]), list(done)))
    stale = [s for s, f in zip(list(done), flags) if f]
    if stale:
        log(f"score_corpus: {len(stale)} shards changed since they were scored (e.g. {by_stem[stale[0]]}); "
            "scoring them again")
    for s in stale:
        fs, path = fsspec.core.url_to_fs(O.stats_url(cfg.out, s))
        fs.rm(path)
        del done[s]


def _check_compatible(cfg: JobConfig, p: Plan, stats: list[dict]) -> None:
    """Refuse to resume into outputs made with another decoder or threshold (it would mix them)."""
    sha = p.decoder.sha256
    other = [s for s in stats if sha and s["decoder_sha256"] != sha]
    if other:
        raise JobError(f"{len(other)} finished shards in {cfg.out} were scored with another decoder "
                       f"(e.g. {other[0]['stem']}); use --overwrite or another --out")
    if p.threshold is not None:
        other = [s for s in stats if s["threshold"] != float(np.float32(p.threshold))]
        if other:
            raise JobError(f"{len(other)} finished shards in {cfg.out} used threshold {other[0]['threshold']:.6g}, "
                           f"not {p.threshold:.6g} ({cfg.threshold}); use --overwrite, or jobs/apply_threshold.py "
                           "to re-split")


def _ensure_ray(cfg: JobConfig) -> bool:
    """Connect to the cluster at --ray-address or RAY_ADDRESS (set by `ray job submit`), else start an
    embedded local Ray (never a stale cluster found in /tmp/ray). True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    return True


def _default_actors(cfg: JobConfig, n_shards: int) -> int:
    import ray

    res = ray.cluster_resources()
    if cfg.actors:
        n = cfg.actors
    elif cfg.gpus_per_actor > 0:
        n = int(res.get("GPU", 0) // cfg.gpus_per_actor)
        if n < 1:
            raise JobError(f"--gpus-per-actor {cfg.gpus_per_actor} but the cluster has {res.get('GPU', 0)} GPUs")
    else:
        n = max(1, int(res.get("CPU", 1) // max(cfg.cpus_per_actor, 1e-9)))
    return max(1, min(n, n_shards))


def _map_shards(cfg: JobConfig, items: list[dict], threshold: float | None, finalize: bool) -> list[dict]:
    """Run the scoring actors over `items` (url + stem each); returns one summary row per shard."""
    import ray

    from pipeline.job.actors import ShardScorer

    ray.data.DataContext.get_current().enable_progress_bars = cfg.progress
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        ShardScorer, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=_default_actors(cfg, len(items))),
        num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor,
        fn_constructor_kwargs={"decoder": cfg.decoder, "out": cfg.out, "threshold": threshold, "finalize": finalize,
                               "batch_size": cfg.batch_size, "threads": cfg.n_threads,
                               "store_embeddings": cfg.store_embeddings, "carry_fields": tuple(cfg.carry_fields),
                               "max_attempts": cfg.max_attempts, "limits": cfg.limits, "env": forwarded_env()},
    )
    return ds.take_all()


def _finalize_shards(cfg: JobConfig, items: list[dict], threshold: float) -> list[dict]:
    """Re-split `items` from their stored scores at `threshold` (Ray tasks)."""
    import ray

    from pipeline.job.actors import finalize_batch

    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(finalize_batch, batch_size=1, batch_format="numpy", num_cpus=1,
                        fn_kwargs={"out": cfg.out, "threshold": threshold, "max_attempts": cfg.max_attempts,
                                   "limits": cfg.limits, "env": forwarded_env()})
    return ds.take_all()


def run_job(cfg: JobConfig, log=print) -> dict:
    """Run (or resume) a scoring job; returns run.json's content. JobError for bad input (nothing
    written), ShardsFailed when shards failed after every attempt (the others are done, no run.json)."""
    p = plan(cfg)
    claim_out(cfg.out, tool="score_corpus", info={"inputs": list(cfg.inputs), "decoder": cfg.decoder},
              overwrite=cfg.overwrite)
    attempts.clear_all(cfg.out)
    try:
        return _score(cfg, p, log)
    finally:
        O.remove_temp_files(cfg.out)      # left by failed writes or actors killed mid-write


def _score(cfg: JobConfig, p: Plan, log) -> dict:
    done = _finished(cfg.out, p.stems)
    _forget_changed(cfg, p, done, log)
    _check_compatible(cfg, p, list(done.values()))
    todo = [{"url": u, "stem": s} for u, s in zip(p.urls, p.stems) if s not in done]
    skipped = len(p.urls) - len(todo)
    log(f"score_corpus: {len(p.urls)} shards, {skipped} already done, {len(todo)} to score -> {cfg.out}")
    t0 = time.perf_counter()
    scored = 0
    started = _ensure_ray(cfg) if todo else False
    try:
        if p.threshold is None:
            if todo:
                scored = _check_failed(_map_shards(cfg, todo, None, finalize=False))
            threshold = resolve_threshold(p.policy, p.decoder.calibration, O.all_scores(cfg.out, p.stems))
            if todo:
                _check_failed(_finalize_shards(cfg, todo, threshold))
        else:
            threshold = p.threshold
            if todo:
                scored = _check_failed(_map_shards(cfg, todo, threshold, finalize=True))
    finally:
        if started:
            import ray

            ray.shutdown()
    seconds = time.perf_counter() - t0
    fin = _finished(cfg.out, p.stems)
    missing = [s for s in p.stems if s not in fin]
    if missing:
        raise ShardsFailed(f"{len(missing)} shards have no stats after the run (e.g. {missing[0]}); "
                           "rerun the same command to finish them")
    stats = [fin[s] for s in p.stems]
    mismatch = [s["stem"] for s in stats if not math.isclose(s["threshold"], threshold, rel_tol=1e-6, abs_tol=1e-12)]
    if mismatch:
        log(f"score_corpus: warning: {len(mismatch)} shards were finished earlier with another threshold "
            f"(e.g. {mismatch[0]}); rerun with --overwrite or jobs/apply_threshold.py")
    attempts.clear_all(cfg.out)
    run = write_run_json(cfg.out, config=cfg.to_dict(), decoder=p.decoder, policy=str(p.policy),
                         threshold=threshold, urls=p.urls, stems=p.stems, stats=stats, seconds=seconds, scored=scored)
    log(O.summary_table(run["totals"], seconds, scored, skipped))
    if cfg.report:
        from pipeline.report.analyze import report_after_run

        report_after_run(cfg.out, "score_corpus", cfg.progress, log)
    return run
