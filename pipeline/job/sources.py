"""The identity of a source shard at scoring time (size, mtime, ETag), recorded in its stats, so a
shard that changed since it was scored is noticed on resume and before a re-split."""
from __future__ import annotations

import fsspec


def source_info(url: str) -> dict:
    """{"size", "mtime", "etag"} of the shard now (mtime / etag null where the store has none)."""
    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    etag = info.get("ETag") or info.get("etag")
    mtime = info.get("mtime")
    if mtime is None and info.get("LastModified") is not None:
        mtime = info["LastModified"].timestamp()
    return {"size": int(info.get("size") or 0), "mtime": None if mtime is None else float(mtime),
            "etag": None if etag is None else str(etag).strip('"')}


def changed(recorded: dict | None, url: str) -> bool:
    """Whether the shard at `url` differs from what its stats recorded (False when nothing was recorded)."""
    if not recorded:
        return False
    try:
        now = source_info(url)
    except FileNotFoundError:
        return True
    return any(recorded.get(k) is not None and now[k] != recorded[k] for k in ("size", "mtime", "etag"))
