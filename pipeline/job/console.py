"""What score_corpus shows while Ray works. Ray's own console output (Ray Data's operator progress
bars, its periodic "Running Dataset" dumps, the execution-plan lines, the token-auth notice of the
embedded local cluster) is switched off; Ray still writes all of it to its session folder
(/tmp/ray/session_*/logs, ray-data/ray-data.log). Instead `collect` consumes each stage's summary rows
and shows one tqdm bar (shards, samples/s, flagged so far, ETA) when run interactively, or, without a
TTY, with --no-progress or under `ray job submit`, a line every ~10% of the shards or 30 s, whichever
is rarer, and one when the stage ends."""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager

LOG_EVERY_FRACTION = 0.1    # without a bar: a line after at least this share of the shards ...
LOG_EVERY_S = 30.0          # ... and at least this many seconds since the last line

# Loggers of Ray modules whose only console messages are notices this job makes moot.
AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"   # "Token authentication is enabled ..."
PROGRESS_HINT_LOGGER = "ray.data._internal.progress"    # "Progress bars disabled. To enable, set ..."


def on_cluster(address: str | None) -> bool:
    """True when the job joins an existing cluster: --ray-address, or RAY_ADDRESS (set by `ray job submit`)."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def interactive(progress: bool, address: str | None, stream=None) -> bool:
    """A bar only for a person at a terminal: progress on, stderr a TTY, not joining a cluster."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(progress and not on_cluster(address) and isatty is not None and isatty())


@contextmanager
def _raised_level(name: str, level: int, when: bool = True):
    """Raise the level of logger `name` for the duration (restored after)."""
    logger = logging.getLogger(name)
    before = logger.level
    if when:
        logger.setLevel(max(level, before))
    try:
        yield
    finally:
        logger.setLevel(before)


def quiet_ray_data() -> None:
    """Ray Data without console output of its own, for every dataset created from now on (a Dataset
    copies the current DataContext when it is created): no progress bars, no execution-start lines,
    its console handler at WARNING (unless RAY_DATA_LOGGING_CONFIG configures Ray Data's logging);
    its file log, ray-data.log in the session folder, keeps everything."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False          # all of Ray Data's bars (same as RAY_DATA_DISABLE_PROGRESS_BARS=1)
    ctx.print_on_execution_start = False      # "Starting execution of Dataset ..." / "Execution plan ..."
    ctx.enable_auto_log_stats = False         # no stats dump after each execution (Ray's default)
    logging.getLogger(PROGRESS_HINT_LOGGER).setLevel(logging.ERROR)
    if os.environ.get("RAY_DATA_LOGGING_CONFIG"):
        return
    for h in logging.getLogger("ray.data").handlers:     # "console" in Ray Data's default logging config
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(max(h.level, logging.WARNING))


def start_ray(address: str | None) -> bool:
    """Connect to the cluster at `address` or RAY_ADDRESS, else start an embedded local Ray (never a
    stale cluster found in /tmp/ray), quietly: Ray's console output at WARNING, worker output still
    forwarded, Ray Data quiet (`quiet_ray_data`), and for the embedded cluster no token-auth notice
    (token authentication stays on, Ray's default for a local cluster). True when this call ran
    ray.init (the caller shuts Ray down then)."""
    import ray

    quiet_ray_data()
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    with _raised_level(AUTH_NOTICE_LOGGER, logging.ERROR, when=target == "local"):
        ray.init(address=target, log_to_driver=True, logging_level="WARNING")
    return True


def say(line: str) -> None:
    """print, flushed: the lines must show while the job runs, also when stdout is a pipe (ray job submit)."""
    print(line, flush=True)


def _seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Counts of one stage (shards done, samples read, flagged, failed) shown as a tqdm bar or as
    log lines every `every_fraction` of the shards and `every_s` seconds, whichever is rarer."""

    def __init__(self, total: int, desc: str, *, bar: bool, flagged: bool, log: Callable[[str], None] = say,
                 clock: Callable[[], float] = time.monotonic, every_s: float = LOG_EVERY_S,
                 every_fraction: float = LOG_EVERY_FRACTION, prog: str = "score_corpus", file=None,
                 bar_delay: float = 1e-3):
        self.total, self.desc, self.show_flagged, self.prog = total, desc, flagged, prog
        self.log, self.clock = log, clock
        self.every_s = every_s
        self.step = max(1, math.ceil(total * every_fraction))
        self.t0 = self.last_t = clock()
        self.done = self.last_done = self.read = self.flagged = self.failed = 0
        self.bar = None
        if bar:
            from tqdm import tqdm

            # bar_delay: drawn from the first finished shard on, below what Ray prints while actors start
            self.bar = tqdm(total=total, desc=desc, unit="shard", file=file if file is not None else sys.stderr,
                            dynamic_ncols=True, smoothing=0.1, delay=bar_delay)

    def _rate(self, now: float) -> float:
        return self.read / max(now - self.t0, 1e-9)

    def _counts(self, now: float) -> str:
        parts = [f"{self._rate(now):.1f} samples/s"]
        if self.show_flagged:
            parts.append(f"{self.flagged} flagged")
        if self.failed:
            parts.append(f"{self.failed} failed")
        return ", ".join(parts)

    def add(self, row: Mapping) -> None:
        """One shard's summary row (`read`, `flagged` once routed, `failed` when it gave up)."""
        self.done += 1
        self.read += int(row.get("read") or 0)
        self.flagged += int(row.get("flagged") or 0)
        self.failed += bool(row.get("failed"))
        now = self.clock()
        if self.bar is not None:
            self.bar.set_postfix_str(self._counts(now), refresh=False)
            self.bar.update(1)
        elif (self.done < self.total and self.done - self.last_done >= self.step
              and now - self.last_t >= self.every_s):
            eta = (now - self.t0) / self.done * (self.total - self.done)
            self.log(f"{self.prog}: {self.desc} {self.done}/{self.total} shards, {self.read} samples, "
                     f"{self._counts(now)}, ETA {_seconds(eta)}")
            self.last_t, self.last_done = now, self.done

    def close(self, finished: bool = True) -> None:
        """The bar's last state, or one line saying what the stage did (none when it failed)."""
        if self.bar is not None:
            self.bar.close()
            return
        if not finished:
            return
        now = self.clock()
        tail = f", {self.flagged} flagged" if self.show_flagged else ""
        tail += f", {self.failed} failed" if self.failed else ""
        self.log(f"{self.prog}: {self.desc} done: {self.done}/{self.total} shards, {self.read} samples in "
                 f"{_seconds(now - self.t0)}{tail}")


def collect(ds, total: int, desc: str, *, bar: bool, flagged: bool, log: Callable[[str], None] = say,
            **kw) -> list[dict]:
    """All rows of `ds` (a Ray Dataset of one summary row per shard, or any iterable of rows), shown
    as they arrive (`Progress`); replaces `ds.take_all()`."""
    rows: Iterable = ds.iter_rows() if hasattr(ds, "iter_rows") else ds
    progress = Progress(total, desc, bar=bar, flagged=flagged, log=log, **kw)
    out = []
    try:
        for row in rows:
            out.append(row)
            progress.add(row)
    except BaseException:
        progress.close(finished=False)
        raise
    progress.close()
    return out
