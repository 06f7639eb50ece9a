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
from pipeline.dede.reference import CleanReference
from pipeline.dede.thresholds import ThresholdPolicy, parse_threshold, resolve_threshold
from pipeline.detect.calibrate import check_difficulty, check_images
from pipeline.detect.spec import DEDE, DEFAULT_DETECTORS, DetectorPlan
from pipeline.errors import BadInput
from pipeline.job import attempts
from pipeline.job import detectors as D
from pipeline.job import outputs as O
from pipeline.job.config import JobConfig
from pipeline.job.decoder import DecoderFacts, check_decoder, clean_reference
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
    threshold: float | None          # DeDe's; None: the policy needs all scores first (gmm)
    detectors: DetectorPlan = DetectorPlan((DEDE,))
    clean: CleanReference | None = None     # the decoder's clean reference, when detectors beside dede run


def plan(cfg: JobConfig) -> Plan:
    """Check every input (options, threshold, decoder and its clean reference for the embedding detectors,
    shard URLs and their stems); JobError otherwise."""
    cfg.validate()
    policy = parse_threshold(cfg.threshold)
    dets = cfg.detector_plan()
    if policy.kind == "paper" and dets.flag_by != DEDE:
        if cfg.flag_by is None:
            raise JobError(f"--threshold paper exists only for dede, and the default --flag-by is {dets.flag_by}; "
                           "add --flag-by dede (or --detectors dede), or use fpr:X, gmm or a number")
        raise JobError(f"--threshold paper exists only for dede, not --flag-by {dets.flag_by}; "
                       "use --flag-by dede, or fpr:X, gmm or a number")
    decoder = check_decoder(cfg.decoder)
    clean = clean_reference(cfg.decoder, _reference_purpose(cfg, dets), "pass --detectors dede to score with DeDe "
                            "alone") if dets.needs_embeddings else None
    if clean is not None:
        try:
            check_difficulty(dets, clean)
            check_images(dets, clean)
        except BadInput as e:
            raise JobError(f"decoder {cfg.decoder}: {e}") from None
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
    return Plan(urls, stems, decoder, policy, threshold, dets, clean)


def _reference_purpose(cfg: JobConfig, dets: DetectorPlan) -> str:
    """What needs the decoder's clean reference, for its one-line error."""
    asked = ",".join(cfg.detectors) + (" (the default)" if list(cfg.detectors) == list(DEFAULT_DETECTORS) else "")
    return f"the embedding detectors ({', '.join(n for n in dets.names if n != DEDE)}) of --detectors {asked}"


def _check_failed(rows: list[dict], others: str = "the others are done") -> int:
    """The samples read, or ShardsFailed naming the shards that failed (`others`: what became of the rest)."""
    failed = [r for r in rows if r.get("failed")]
    if failed:
        lines = "; ".join(f"{r['stem']}: {r['failed']}" for r in failed[:5])
        raise ShardsFailed(f"{len(failed)} of {len(rows)} shards failed ({lines}); {others}, "
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
    """Refuse to resume into outputs made with another decoder, detectors or threshold (it would mix them); with
    --redetect, refuse a run that is not finished or was scored with another decoder."""
    sha = p.decoder.sha256
    other = [s for s in stats if sha and s["decoder_sha256"] != sha]
    if other:
        raise JobError(f"{len(other)} finished shards in {cfg.out} were scored with another decoder "
                       f"(e.g. {other[0]['stem']}); use --overwrite or another --out")
    if cfg.redetect:
        if len(stats) < len(p.stems):
            raise JobError(f"--redetect needs a finished run, and {len(p.stems) - len(stats)} of the {len(p.stems)} "
                           f"shards in {cfg.out} have no stats; finish it first (the same command without --redetect)")
        return
    want = (sorted(p.detectors.names), p.detectors.flag_by)
    other = [s for s in stats if (sorted(s.get("detectors", [DEDE])), s.get("flag_by", DEDE)) != want]
    if other:
        first = other[0]
        raise JobError(f"{len(other)} finished shards in {cfg.out} were scored with other detectors (e.g. "
                       f"{first['stem']}: --detectors {','.join(sorted(first.get('detectors', [DEDE])))} --flag-by "
                       f"{first.get('flag_by', DEDE)}); resume with those flags, or use --overwrite or another --out")
    if p.threshold is not None:        # DeDe's threshold at the policy, known before scoring, tells the policy
        want = float(np.float32(p.threshold))
        other = [s for s in stats if _dede_threshold(s) != want]
        if other and p.detectors.flag_by == DEDE:
            raise JobError(f"{len(other)} finished shards in {cfg.out} used threshold {other[0]['threshold']:.6g}, "
                           f"not {p.threshold:.6g} ({cfg.threshold}); use --overwrite, or jobs/apply_threshold.py "
                           "to re-split")
        if other:
            raise JobError(f"{len(other)} finished shards in {cfg.out} used another threshold than --threshold "
                           f"{cfg.threshold} (DeDe's threshold: {_dede_threshold(other[0]):.6g} there, "
                           f"{p.threshold:.6g} now); use --overwrite, or jobs/apply_threshold.py to re-split")


def _dede_threshold(stats: dict) -> float:
    """DeDe's threshold at the policy a finished shard was split at (its flag-by's before the detectors)."""
    dede = stats.get("detectors", {}).get(DEDE)
    return stats["threshold"] if dede is None or dede["threshold"] is None else dede["threshold"]


def _ensure_ray(cfg: JobConfig) -> bool:
    """Connect to the cluster at --ray-address or RAY_ADDRESS (set by `ray job submit`), else start an
    embedded local Ray (never a stale cluster found in /tmp/ray), with Ray's own console output off
    (pipeline/job/console.py). True when this call started Ray."""
    from pipeline.job.console import start_ray

    return start_ray(cfg.ray_address)


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

    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        ShardScorer, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=_default_actors(cfg, len(items))),
        num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor,
        fn_constructor_kwargs={"decoder": cfg.decoder, "out": cfg.out, "threshold": threshold, "finalize": finalize,
                               "batch_size": cfg.batch_size, "threads": cfg.n_threads,
                               "store_embeddings": cfg.store_embeddings or cfg.detector_plan().needs_embeddings,
                               "images": cfg.detector_plan().image_detectors,
                               "carry_fields": tuple(cfg.carry_fields),
                               "max_attempts": cfg.max_attempts, "limits": cfg.limits, "env": forwarded_env()},
    )
    from pipeline.job.console import collect, interactive

    return collect(ds, len(items), "scoring", bar=interactive(cfg.progress, cfg.ray_address), flagged=finalize)


def _finalize_shards(cfg: JobConfig, items: list[dict], rule: O.FlagRule) -> list[dict]:
    """Re-split `items` from their stored scores by `rule` (Ray tasks)."""
    import ray

    from pipeline.job.actors import finalize_batch

    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(finalize_batch, batch_size=1, batch_format="numpy", num_cpus=1,
                        fn_kwargs={"out": cfg.out, "rule": rule, "max_attempts": cfg.max_attempts,
                                   "limits": cfg.limits, "env": forwarded_env()})
    from pipeline.job.console import collect, interactive

    return collect(ds, len(items), "splitting", bar=interactive(cfg.progress, cfg.ray_address), flagged=True)


def _detect_shards(cfg: JobConfig, items: list[dict], suite, rule: O.FlagRule | None) -> list[dict]:
    """The embedding detectors' phase over `items`: the fitted `suite` goes to the object store once,
    CPU actors add each shard's det_* columns and route it by `rule` (None: columns only, for gmm)."""
    import ray

    from pipeline.job.actors import ShardDetector

    cpus = ray.cluster_resources().get("CPU", 1)
    n = cfg.actors or max(1, int(cpus // max(cfg.cpus_per_actor, 1)))
    suite_ref = ray.put(suite)          # held here until the stage ends: restarted actors fetch it again
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        ShardDetector, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(n, len(items)))), num_cpus=cfg.cpus_per_actor,
        fn_constructor_kwargs={"suite": suite_ref, "out": cfg.out, "rule": rule, "threads": cfg.n_threads,
                               "max_attempts": cfg.max_attempts, "limits": cfg.limits, "env": forwarded_env()},
    )
    from pipeline.job.console import collect, interactive

    return collect(ds, len(items), "detectors", bar=interactive(cfg.progress, cfg.ray_address),
                   flagged=rule is not None)


def _score_detectors(cfg: JobConfig, p: Plan, todo: list[dict], done: dict[str, dict], log) -> tuple[O.FlagRule, int]:
    """Phase 1 scores and keeps the embeddings (skipped with --redetect, whose `todo` is every shard, scored
    before); the driver streams the corpus reference sample and calibrates every detector on the decoder's hold-out;
    phase 2 adds the det_* columns and routes the shards by the flag-by detector (gmm: columns first, thresholds from
    every shard, then the split). Shards that failed phase 1 are reported at the end; the others are split first
    unless the run needs every shard's scores (in-corpus detectors, gmm). Returns the rule the shards were routed by
    and the samples scored."""
    if not todo:
        return D.rule_from_stats(done[p.stems[0]]), 0
    rows = [] if cfg.redetect else _map_shards(cfg, todo, None, finalize=False)
    failed = [r for r in rows if r.get("failed")]
    if failed and (p.detectors.in_corpus or p.policy.needs_scores):
        _check_failed(rows, "the others are scored but not split (the in-corpus detectors and gmm need every "
                            "shard's scores)")
    if rows and len(failed) == len(rows):
        _check_failed(rows)
    lost = {r["stem"] for r in failed}
    todo = [t for t in todo if t["stem"] not in lost]
    scored = sum(int(r["read"]) for r in rows if not r.get("failed"))
    cal = D.prepare(p.detectors, p.clean, p.decoder.calibration, cfg.out, p.stems, cfg.density_reference, log,
                    bank_trim=cfg.bank_trim)
    if p.policy.needs_scores:
        _check_failed(_detect_shards(cfg, todo, cal.suite, None))
        rule = D.flag_rule(p.detectors, D.thresholds(p.policy, p.detectors, cal.calibrations, cfg.out, p.stems))
        _check_failed(_finalize_shards(cfg, todo, rule))
    else:
        rule = D.flag_rule(p.detectors, D.thresholds(p.policy, p.detectors, cal.calibrations, cfg.out, p.stems))
        _check_failed(failed + _detect_shards(cfg, todo, cal.suite, rule))   # phase 1's failures named too
    return rule, scored


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
    todo = [{"url": u, "stem": s} for u, s in zip(p.urls, p.stems) if cfg.redetect or s not in done]
    skipped = len(p.urls) - len(todo)
    log(f"score_corpus: {len(p.urls)} shards, " + (f"the detectors again from their stored scores -> {cfg.out}"
        if cfg.redetect else f"{skipped} already done, {len(todo)} to score -> {cfg.out}"))
    if cfg.redetect:                  # the old run.json would describe a split this run is replacing
        fs, path = fsspec.core.url_to_fs(O.run_url(cfg.out))
        if fs.exists(path):
            fs.rm(path)
    t0 = time.perf_counter()
    scored = 0
    started = _ensure_ray(cfg) if todo else False
    try:
        if p.detectors.needs_embeddings:
            rule, scored = _score_detectors(cfg, p, todo, done, log)
        elif p.threshold is None:
            if todo:
                scored = _check_failed(_map_shards(cfg, todo, None, finalize=False))
            rule = O.FlagRule.dede(resolve_threshold(p.policy, p.decoder.calibration, O.all_scores(cfg.out, p.stems)))
            if todo:
                _check_failed(_finalize_shards(cfg, todo, rule))
        else:
            rule = O.FlagRule.dede(p.threshold)
            if todo:
                scored = _check_failed(_map_shards(cfg, todo, p.threshold, finalize=True))
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
    threshold = rule.threshold
    mismatch = [s["stem"] for s in stats if not math.isclose(s["threshold"], threshold, rel_tol=1e-6, abs_tol=1e-12)]
    if mismatch:
        log(f"score_corpus: warning: {len(mismatch)} shards were finished earlier with another threshold "
            f"(e.g. {mismatch[0]}); rerun with --overwrite or jobs/apply_threshold.py")
    attempts.clear_all(cfg.out)
    run = write_run_json(cfg.out, config=cfg.to_dict(), decoder=p.decoder, policy=str(p.policy),
                         threshold=threshold, urls=p.urls, stems=p.stems, stats=stats, seconds=seconds, scored=scored,
                         rule=rule)
    log(O.summary_table(run["totals"], seconds, scored, skipped))
    if cfg.report:
        from pipeline.report.analyze import report_after_run

        report_after_run(cfg.out, "score_corpus", cfg.progress, log)
    return run
