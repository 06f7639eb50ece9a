"""Which folders are a run's own: the `.dede-run` marker, written into --out before any output, and
the only things `--overwrite` may remove."""
from __future__ import annotations

import posixpath
from datetime import datetime, timezone

import fsspec

from pipeline.job.errors import JobError
from pipeline.job.jsonfile import write_json

MARKER = ".dede-run"
MARKER_VERSION = 1
OUTPUT_NAMES = ("run.json", "stats", "scores", "clean", "quarantine", ".attempts", "report")   # what a run writes
STAGE_PREFIX = ".apply-"                                                          # apply_threshold's staging


def marker_url(out: str) -> str:
    return f"{out.rstrip('/')}/{MARKER}"


def is_marked(fs: fsspec.AbstractFileSystem, folder: str) -> bool:
    """Whether `folder` (a path on `fs`) holds our marker, i.e. is the --out of one of our runs."""
    return fs.exists(posixpath.join(folder.rstrip("/"), MARKER))


def claim_out(out: str, *, tool: str, info: dict, overwrite: bool) -> None:
    """Make --out ours before anything is written into it.

    Marked: ours; with `overwrite` our outputs are removed first. Unmarked and holding any of our
    output names: refused (they are someone else's files). Missing, empty or holding only unrelated
    files: the marker is written and the run proceeds beside them."""
    fs, path = fsspec.core.url_to_fs(out)
    if fs.isfile(path):
        raise JobError(f"--out {out} is a file; pass a folder")
    if is_marked(fs, path):
        if overwrite:
            remove_outputs(out)
        return
    names = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)} if fs.isdir(path) else set()
    ours = sorted(n for n in names if n in OUTPUT_NAMES or n.startswith(STAGE_PREFIX))
    if ours:
        raise JobError(f"--out {out} holds {', '.join(ours)} but no {MARKER} marker, so nothing shows a dede run "
                       "wrote them; nothing was changed: move them away, choose another --out, or (a run of a "
                       f"version before the marker) adopt it with: echo '{{}}' > {marker_url(out)}")
    write_json(marker_url(out), {"tool": tool, "version": MARKER_VERSION,
                                 "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info})


def remove_outputs(out: str) -> None:
    """Remove what our runs write into a marked --out (run.json, stats/, scores/, clean/, quarantine/,
    attempt records, staging folders); anything else there is left alone."""
    fs, path = fsspec.core.url_to_fs(out)
    if not is_marked(fs, path):
        raise JobError(f"refusing to remove outputs from {out}: it has no {MARKER} marker")
    base = path.rstrip("/")
    for p in fs.ls(base, detail=False):
        name = posixpath.basename(p.rstrip("/"))
        if name in OUTPUT_NAMES or name.startswith(STAGE_PREFIX):
            fs.rm(p, recursive=True)
    fs.invalidate_cache()
