"""apply_threshold: re-split a finished run's clean/quarantine shards at another threshold from its
stored scores, by the run's flag-by detector. Every source shard is checked first, the new split is
written beside the old one (`--out/.apply-<id>/`), and it replaces the old files only once every
shard is complete."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import fsspec

from pipeline.corpus.limits import Limits
from pipeline.dede.thresholds import ThresholdPolicy, parse_threshold, resolve_threshold
from pipeline.detect.ensemble import DEFAULT_FUSION
from pipeline.detect.spec import DEDE, DEFAULT_ENSEMBLE, plan_detectors
from pipeline.job import detectors as D
from pipeline.job import outputs as O
from pipeline.job.config import DEFAULT_REFERENCE
from pipeline.job.decoder import DecoderFacts, check_decoder, clean_reference
from pipeline.job.errors import JobError
from pipeline.job.ownership import STAGE_PREFIX
from pipeline.job.runfile import write_run_json
from pipeline.job.shard import finalize_from_scores
from pipeline.job.sources import changed


def _read_run(run_dir: str) -> dict:
    try:
        return O.read_json(O.run_url(run_dir))
    except FileNotFoundError:
        raise JobError(f"no finished run at {run_dir}: run.json is missing") from None


def _check_sources(run_dir: str, urls: list[str], stems: list[str], workers: int) -> None:
    """JobError when a source shard changed since it was scored (nothing is touched then)."""
    def one(us: tuple[str, str]) -> bool:
        return changed(O.read_json(O.stats_url(run_dir, us[1])).get("source"), us[0])

    with ThreadPoolExecutor(max(1, workers)) as pool:
        stale = [u for u, c in zip(urls, pool.map(one, zip(urls, stems))) if c]
    if stale:
        raise JobError(f"{len(stale)} source shards changed since they were scored (e.g. {stale[0]}); nothing was "
                       "changed: rerun score_corpus on this --out to re-score them first")


def _remove_stages(run_dir: str) -> None:
    """Remove staging folders an interrupted re-split left behind."""
    fs, path = fsspec.core.url_to_fs(run_dir)
    for p in fs.ls(path, detail=False):
        if p.rstrip("/").rsplit("/", 1)[-1].startswith(STAGE_PREFIX):
            fs.rm(p, recursive=True)


def _swap(stage: str, run_dir: str, stems: list[str]) -> None:
    """Move the staged split over the old one, shard by shard, stats last for each. Interrupted, the
    old run.json still stands and rerunning the same re-split finishes the job."""
    for stem in stems:
        for url in (O.scores_url, O.clean_url, O.quarantine_url, O.stats_url):
            O.move(url(stage, stem), url(run_dir, stem))


def _rule(run: dict, run_dir: str, stems: list[str], policy: ThresholdPolicy, decoder_dir: str, log) -> O.FlagRule:
    """The split at `policy` by the run's flag-by detector (DeDe for runs without detectors). fpr:X and
    paper read the decoder's calibration; for other detectors fpr:X recalibrates them as the run did
    (its corpus reference sample and the decoder's clean reference)."""
    cfg = run["config"]
    plan = plan_detectors(cfg.get("detectors", [DEDE]), run.get("flag_by", DEDE), cfg.get("ensemble", DEFAULT_ENSEMBLE),
                          cfg.get("fusion", DEFAULT_FUSION))
    if policy.kind == "paper" and plan.flag_by != DEDE:
        raise JobError(f"--threshold paper exists only for dede, not the run's flag-by {plan.flag_by}; use fpr:X, "
                       "gmm or a number (or score the corpus again with --flag-by dede)")
    dede = check_decoder(decoder_dir).calibration if policy.needs_calibration else None
    if not plan.needs_embeddings:
        return O.FlagRule.dede(resolve_threshold(policy, dede, O.all_scores(run_dir, stems) if policy.needs_scores
                                                 else None))
    calibrations = None
    if policy.needs_calibration:
        clean = clean_reference(decoder_dir, f"fpr:X for the run's detectors ({','.join(plan.names)})",
                                "re-split with a number or gmm")
        calibrations = D.prepare(plan, clean, dede, run_dir, stems, cfg.get("density_reference", DEFAULT_REFERENCE),
                                 log, "apply_threshold", cfg.get("bank_trim", 0.0)).calibrations
    return D.flag_rule(plan, D.thresholds(policy, plan, calibrations, run_dir, stems))


def apply_threshold(run_dir: str, policy: str, decoder: str | None = None, workers: int = 2, log=print) -> dict:
    """Re-split `run_dir` at `policy`; returns the new run.json. JobError for bad input or a changed
    source shard, in which case nothing in `run_dir` has changed."""
    parsed = parse_threshold(policy)
    run = _read_run(run_dir)
    urls = [s["url"] for s in run["shards"]]
    stems = [s["stem"] for s in run["shards"]]
    facts = DecoderFacts(dir=run["decoder"]["dir"], sha256=run["decoder"]["sha256"],
                         encoder_spec=run["decoder"].get("encoder"), calibration=None)
    rule = _rule(run, run_dir, stems, parsed, decoder or facts.dir, log)
    threshold = rule.threshold
    _check_sources(run_dir, urls, stems, workers)
    _remove_stages(run_dir)
    limits = Limits(**run["config"].get("limits", {}))     # the run's own: the re-read must see the same samples
    t0 = time.perf_counter()
    stage = O.join(run_dir, f"{STAGE_PREFIX}{uuid.uuid4().hex[:12]}")
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            try:
                stats = list(pool.map(lambda us: finalize_from_scores(run_dir, us[0], us[1], rule,
                                                                        dest=stage, limits=limits),
                                      zip(urls, stems)))
            except RuntimeError as e:
                raise JobError(f"{e}; nothing was changed") from None
        _swap(stage, run_dir, stems)
    finally:
        _remove_stages(run_dir)
    new = write_run_json(run_dir, config=run["config"], decoder=facts, policy=str(parsed), threshold=threshold,
                         urls=urls, stems=stems, stats=stats, seconds=time.perf_counter() - t0, scored=0,
                         extra={"applied_threshold": {"policy": str(parsed), "previous": run["threshold"]}}, rule=rule)
    by = "" if rule.by == DEDE else f" of {rule.by}"
    log(f"apply_threshold: threshold{by} {threshold:.6g} ({parsed}) applied to {len(stems)} shards")
    log(O.summary_table(new["totals"], time.perf_counter() - t0, 0))
    if run["config"].get("report", True):
        from pipeline.report.analyze import report_after_run

        report_after_run(run_dir, "apply_threshold", False, log)     # the old report is stale now
    return new
