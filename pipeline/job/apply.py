"""apply_threshold: re-split a finished run's clean/quarantine shards from its stored scores.

No re-scoring: each shard's Parquet gets the new threshold/flagged columns, the source shard is
re-read and routed by the same `ShardRouter` the scoring job uses, then stats and run.json are
rewritten. Stats files are removed first, so an interrupted re-split leaves shards visibly
unfinished rather than half old, half new.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import fsspec

from pipeline.dede.store import load_config
from pipeline.dede.thresholds import needs_scores, resolve_threshold
from pipeline.job import outputs as O
from pipeline.job.run import JobError, all_scores, write_run_json
from pipeline.job.shard import finalize_from_scores


def apply_threshold(run_dir: str, policy: str, decoder: str | None = None, workers: int = 2, log=print) -> dict:
    try:
        run = O.read_json(O.run_url(run_dir))
    except FileNotFoundError:
        raise JobError(f"no finished run at {run_dir}: run.json is missing") from None
    urls = [s["url"] for s in run["shards"]]
    stems = [s["stem"] for s in run["shards"]]
    calibration = {}
    if not needs_scores(policy):
        try:
            float(policy)
        except ValueError:
            dec_dir = decoder or run["decoder"]["dir"]
            try:
                calibration = load_config(dec_dir).get("calibration", {})
            except FileNotFoundError as e:
                raise JobError(f"{e} (policy {policy!r} needs the decoder's calibration; pass --decoder)") from None
    try:
        threshold = resolve_threshold(policy, calibration,
                                      all_scores(run_dir, stems) if needs_scores(policy) else None)
    except (ValueError, KeyError) as e:
        raise JobError(f"bad --threshold: {e}") from None
    t0 = time.perf_counter()
    fs, path = fsspec.core.url_to_fs(run_dir)
    for p in (O.run_url(run_dir), *(O.stats_url(run_dir, s) for s in stems)):
        fs2, p2 = fsspec.core.url_to_fs(p)
        if fs2.exists(p2):
            fs2.rm(p2)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        stats = list(pool.map(lambda us: finalize_from_scores(run_dir, us[0], us[1], threshold), zip(urls, stems)))
    seconds = time.perf_counter() - t0
    dec_cfg = {"weights_sha256": run["decoder"]["sha256"], "encoder": {"spec": run["decoder"].get("encoder")}}
    new = write_run_json(run_dir, config=run["config"], dec_cfg=dec_cfg, decoder_dir=run["decoder"]["dir"],
                         policy=str(policy), threshold=threshold, urls=urls, stems=stems, stats=stats,
                         seconds=seconds, scored=0,
                         extra={"applied_threshold": {"policy": str(policy), "previous": run["threshold"]}})
    log(f"apply_threshold: threshold {threshold:.6g} ({policy}) applied to {len(stems)} shards")
    log(O.summary_table(new["totals"], seconds, 0))
    return new
