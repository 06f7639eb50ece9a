"""run.json: a run's config, versions, decoder, threshold, detectors, shards and totals; written last of all."""
from __future__ import annotations

import platform
from datetime import datetime, timezone

from pipeline.corpus.shards import common_root
from pipeline.job import outputs as O
from pipeline.job.decoder import DecoderFacts
from pipeline.job.detectors import detector_totals
from pipeline.job.jsonfile import write_json

RUN_VERSION = 1


def versions() -> dict[str, str]:
    """Python and the versions of the packages that shape the outputs."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("dede-pipeline", "ray", "torch", "pyarrow", "numpy", "pillow", "fsspec", "s3fs"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def write_run_json(out: str, *, config: dict, decoder: DecoderFacts, policy: str, threshold: float,
                   urls: list[str], stems: list[str], stats: list[dict], seconds: float, scored: int,
                   extra: dict | None = None, rule: O.FlagRule | None = None) -> dict:
    """Write run.json (strict JSON: a non-finite threshold is a ValueError) and return its content.
    `rule`: what set `flagged` (default: DeDe's score over `threshold`); run.json records its flag-by
    detector and every detector's column, threshold at the policy and samples flagged."""
    rule = rule or O.FlagRule.dede(threshold)
    run = {
        "version": RUN_VERSION,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "versions": versions(),
        "decoder": {"dir": decoder.dir, "sha256": decoder.sha256, "encoder": decoder.encoder_spec},
        "threshold": {"policy": str(policy), "value": float(threshold)},
        "flag_by": rule.by,
        "detectors": detector_totals(rule, stats),
        "input_root": common_root(urls),
        "shards": [{"url": u, "stem": s, "sha256": st.get("sha256", {})} for u, s, st in zip(urls, stems, stats)],
        "totals": O.totals(stats),
        "timing": {"seconds": round(seconds, 3), "samples_this_run": scored,
                   "samples_per_s": round(scored / seconds, 2) if seconds > 0 else None},
        **(extra or {}),
    }
    write_json(O.run_url(out), run)
    return run
