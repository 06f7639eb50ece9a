"""The machine-readable schemas in <repo>/schemas/ (outputs and the decoder's config.json), by file name."""
from __future__ import annotations

import functools
import json
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


@functools.cache
def load(name: str) -> dict:
    """The parsed schema file `name` (read once per process; callers must not change it)."""
    return json.loads((SCHEMA_DIR / name).read_text())
