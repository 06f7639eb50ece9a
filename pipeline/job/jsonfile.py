"""Strict JSON for every file the job writes: no NaN or Infinity, sorted keys, written atomically."""
from __future__ import annotations

import json

from pipeline.storage import write_text_atomic


def dumps(obj: dict) -> str:
    """`obj` as indented JSON; raises ValueError on NaN or Infinity."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)


def write_json(url: str, obj: dict) -> None:
    """Write `obj` to `url` as strict JSON (whole file or nothing)."""
    write_text_atomic(url, dumps(obj))
