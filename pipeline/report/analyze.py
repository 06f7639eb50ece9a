"""A run -> its report folder: report.html, summary.json, flagged.parquet / keep.parquet and, when the
samples carry DataComp uids, keep_uids.npy / remove_uids.npy. Every file is written whole, and only
once the whole analysis succeeded."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.corpus.limits import Limits
from pipeline.dede import store
from pipeline.dede.thresholds import Calibration
from pipeline.errors import BadInput, describe, one_line
from pipeline.job.jsonfile import dumps
from pipeline.job.outputs import join
from pipeline.job.schemas import check_json
from pipeline.report import datacomp
from pipeline.report.clusters import caption_words, largest_cluster
from pipeline.report.gallery import render_tiles
from pipeline.report.html import render
from pipeline.report.images import png_uri
from pipeline.report.load import RunFiles, open_run
from pipeline.report.plots import histogram, histogram_png
from pipeline.report.scan import Scan, scan
from pipeline.report.verdict import expected_rate, shard_rows, verdict
from pipeline.storage import AtomicFile, write_bytes_atomic, write_text_atomic

SUMMARY_VERSION = 1
SHOWN_QUANTILES = (0.5, 0.9, 0.99, 0.999)


@dataclass(frozen=True)
class Decoder:
    """The decoder the analysis uses: its folder, calibration, and why it is missing when it is."""

    dir: str | None
    calibration: Calibration | None
    note: str | None


def _decoder(run: RunFiles, decoder_dir: str | None) -> Decoder:
    """--decoder (BadInput when unreadable), else run.json's decoder folder when it is readable."""
    if decoder_dir:
        return Decoder(decoder_dir, store.check_decoder(decoder_dir).calibration, None)
    recorded = ((run.run or {}).get("decoder") or {}).get("dir")
    if not recorded:
        return Decoder(None, None, "no decoder: run.json names none and --decoder was not given")
    try:
        return Decoder(recorded, store.check_decoder(recorded).calibration, None)
    except (ValueError, OSError) as e:
        return Decoder(None, None, f"decoder {recorded} unreadable ({one_line(e)}); pass --decoder")


def _threshold(run: RunFiles) -> tuple[str | None, float]:
    """(policy, value) of the run: run.json's, else the value its stats agree on."""
    if run.run is not None:
        t = run.run["threshold"]
        return str(t["policy"]), float(t["value"])
    values = sorted({float(s["threshold"]) for s in run.stats.values()})
    if len(values) != 1:
        raise BadInput(f"{run.url} has no run.json and its stats hold {len(values)} thresholds; cannot analyse")
    return None, values[0]


def _flag_by(run: RunFiles) -> tuple[str, float | None]:
    """(the run's flag-by detector, DeDe's threshold) from run.json, else the stats (dede before the
    embedding detectors existed); the histogram and gallery show DeDe's score at DeDe's threshold."""
    rec = run.run or next(iter(run.stats.values()), {})
    by = rec.get("flag_by", "dede")
    if by == "dede":
        return by, None
    return by, (rec.get("detectors") or {}).get("dede", {}).get("threshold")


def _quantiles(cal: Calibration | None) -> list[dict]:
    if cal is None:
        return []
    return [{"q": q, "value": float(np.interp(q, cal.q, cal.values))} for q in SHOWN_QUANTILES]


def _scorer(dec: Decoder):
    if dec.dir is None:
        return None, dec.note
    from pipeline.dede.scorer import Scorer

    try:
        return Scorer(dec.dir, device="cpu"), None
    except (ValueError, OSError) as e:
        return None, f"no reconstructions: decoder {dec.dir} cannot be loaded ({one_line(e)})"


def _gallery(s: Scan, dec: Decoder, limits: Limits) -> tuple[list[dict], str | None]:
    top = [dict(r, kind="top flagged") for _, _, r in sorted(s.top, reverse=True)]
    seen = {(r["shard"], r["index"]) for r in top}
    near = [dict(r, kind="near threshold") for _, _, r in sorted(s.near, reverse=True)
            if (r["shard"], r["index"]) not in seen]
    tiles = sorted(near, key=lambda r: -r["score"])
    scorer, note = _scorer(dec)
    return render_tiles(top + tiles, scorer, limits), note


def _cluster(s: Scan) -> dict | None:
    f, k = s.flagged_sample.cols, s.kept_sample.cols
    if "embedding" not in f:
        return None
    c = largest_cluster(f["embedding"], list(f["key"]), k.get("embedding"))
    return None if c is None else {**c.to_dict(), "flagged_total": s.flagged, "sampled": s.flagged > len(f["key"])}


def _words(s: Scan) -> list[dict] | None:
    f, k = s.flagged_sample.cols, s.kept_sample.cols
    if "caption" not in f or "caption" not in k:
        return None
    return caption_words(f["caption"], k["caption"])


def _limits(run: RunFiles) -> Limits:
    recorded = ((run.run or {}).get("config") or {}).get("limits")
    return Limits(**recorded) if recorded else Limits()


def analyze_run(run_url: str, decoder_dir: str | None = None, out: str | None = None,
                progress: bool = True) -> dict:
    """Analyse the run at `run_url` into `out` (default RUN/report); returns summary.json's content.
    BadInput (nothing written) for a folder that is not a run, a run without samples, unreadable files."""
    run = open_run(run_url)
    out = out or join(run_url, "report")
    dec = _decoder(run, decoder_dir)
    policy, threshold = _threshold(run)
    by, dede_threshold = _flag_by(run)
    score_threshold = threshold if dede_threshold is None else dede_threshold
    files = {name: AtomicFile(join(out, name)) for name in ("flagged.parquet", "keep.parquet")}
    try:
        s = scan(run, score_threshold, files["flagged.parquet"], files["keep.parquet"], progress)
        scores = s.all_scores()
        rate, source = expected_rate(policy, threshold, dec.calibration if by == "dede" else None)
        v = verdict(s.flagged, s.scored, rate, source, by)
        quantiles = _quantiles(dec.calibration)
        hist = histogram(scores) if len(scores) else None
        tiles, gallery_note = _gallery(s, dec, _limits(run))
        uid_files = s.uid_lists() if "uid" in run.columns else {}
        summary = _summary(run, out, dec, policy, threshold, s, v, hist, quantiles, tiles, gallery_note, uid_files)
        check_json(summary, "summary.schema.json")
        plot = png_uri(histogram_png(hist, score_threshold, quantiles)) if hist else None
        page = render(summary, plot, tiles)
        text = dumps(summary)
    except BaseException:
        for f in files.values():
            f.abort()
        raise
    for f in files.values():
        f.commit()
    for name, arr in uid_files.items():
        write_bytes_atomic(join(out, name), datacomp.npy_bytes(arr))
    write_text_atomic(join(out, "summary.json"), text)
    write_text_atomic(join(out, "report.html"), page)
    return summary


def _summary(run: RunFiles, out: str, dec: Decoder, policy: str | None, threshold: float, s: Scan, v,
             hist: dict | None, quantiles: list[dict], tiles: list[dict], gallery_note: str | None,
             uid_files: dict) -> dict:
    """summary.json (schemas/summary.schema.json): the verdict and every figure the page shows."""
    r = run.run or {}
    return {
        "version": SUMMARY_VERSION,
        "run": run.url,
        "report": out,
        "complete": run.complete,
        "incomplete": run.incomplete,
        "verdict": v.to_dict(),
        "threshold": {"policy": policy, "value": threshold},
        "counts": {"read": s.read, "scored": s.scored, "kept": s.scored - s.flagged, "flagged": s.flagged,
                   "errored": s.errored, "shards": len(run.scores), "shards_with_stats": len(run.stats)},
        "histogram": None if hist is None else {**hist, "calibration_quantiles": quantiles},
        "shards": shard_rows(list(run.stats.values())),
        "cluster": _cluster(s),
        "caption_words": _words(s),
        "gallery": [{k: t[k] for k in ("kind", "key", "shard", "index", "score", "flagged", "problem")}
                    | {"caption": t.get("caption"), "has_image": t["image"] is not None,
                       "has_reconstruction": t["reconstruction"] is not None} for t in tiles],
        "gallery_note": gallery_note,
        "errors": [{"kind": k, "count": n, "examples": s.error_examples[k]} for k, n in sorted(s.errors.items())],
        "files": {"flagged": "flagged.parquet", "keep": "keep.parquet",
                  "uids": {n: len(a) for n, a in uid_files.items()} or None, "uids_missing": s.uids_missing},
        "decoder": {"dir": dec.dir, "note": dec.note,
                    "sha256": (r.get("decoder") or {}).get("sha256"), "encoder": (r.get("decoder") or {}).get("encoder")},
        "config": r.get("config"),
        "versions": r.get("versions"),
        "finished_at": r.get("finished_at"),
    }


def report_after_run(run_url: str, prog: str, progress: bool, log=print) -> dict | None:
    """The analysis at the end of score_corpus and apply_threshold: the verdict line and the report's
    path, or one warning line when it fails (the run itself is complete; rerun jobs/analyze_scores.py)."""
    try:
        summary = analyze_run(run_url, progress=progress)         # with the decoder run.json names
    except Exception as e:  # noqa: BLE001 - the run is done; the report is redone with analyze_scores
        log(f"{prog}: warning: no report ({describe(e)}); the run is complete, "
            f"rerun python jobs/analyze_scores.py {run_url}")
        return None
    log(summary["verdict"]["line"])
    log(f"report: {summary['report'].rstrip('/')}/report.html")
    return summary
