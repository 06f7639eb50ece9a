"""Bounded attempts per shard. A record `--out/.attempts/<stem>` is written before each attempt, so a
process that dies mid-shard (out of memory, killed) leaves it behind; Ray restarts the actor and
resubmits the shard, and once `max_attempts` are spent the shard is reported as failed by name."""
from __future__ import annotations

import logging
import os

import fsspec

from pipeline.errors import describe
from pipeline.job.jsonfile import write_json
from pipeline.job.outputs import join, read_json

logger = logging.getLogger(__name__)

DIR = ".attempts"
DEFAULT_MAX_ATTEMPTS = 3


def record_url(out: str, stem: str) -> str:
    return join(out, DIR, f"{stem}.json")


def _read(out: str, stem: str) -> dict:
    try:
        return read_json(record_url(out, stem))
    except FileNotFoundError:
        return {"attempts": 0, "error": ""}


def clear(out: str, stem: str) -> None:
    """Forget the attempts of one shard."""
    fs, path = fsspec.core.url_to_fs(record_url(out, stem))
    if fs.exists(path):
        fs.rm(path)


def clear_all(out: str) -> None:
    """Forget every shard's attempts (a new run starts with a full budget)."""
    fs, path = fsspec.core.url_to_fs(join(out, DIR))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def attempt(work, out: str, stem: str, max_attempts: int) -> dict:
    """Run `work()` for one shard until it succeeds or `max_attempts` (counted across process deaths)
    are spent. Returns the shard's summary row; `failed` names the last error ("" when done)."""
    error = ""
    for _ in range(max_attempts):
        n = 0
        try:
            rec = _read(out, stem)
            n = int(rec["attempts"])
            if n >= max_attempts:
                error = error or rec.get("error") or "the process scoring it died each time (out of memory?)"
                return _row(stem, 0, f"gave up after {n} attempts: {error}")
            write_json(record_url(out, stem), {"attempts": n + 1, "error": ""})
            s = work()
            clear(out, stem)
            return _row(stem, int(s["read"]), "", int(s.get("flagged") or 0))
        except Exception as e:  # noqa: BLE001 - a failed shard is reported, never aborts the others
            error = describe(e)
            logger.warning("shard %s failed: %s", stem, error)
            try:
                write_json(record_url(out, stem), {"attempts": n + 1, "error": error})
            except Exception:  # noqa: BLE001 - the loop bound still holds
                pass
    return _row(stem, 0, f"gave up after {max_attempts} attempts: {error}")


def _row(stem: str, read: int, failed: str, flagged: int = 0) -> dict:
    """One shard's summary row; `flagged` is 0 until the shard is routed (score-only stages)."""
    return {"stem": stem, "read": read, "flagged": flagged, "pid": os.getpid(), "failed": failed}
