"""The library's two error types: bad input (the user can fix it; CLIs exit 2) and failed work (exit 1).

The library raises these (or ValueError / FileNotFoundError for bad input) and never exits the
process; `pipeline.cli` turns them into one line on stderr.
"""
from __future__ import annotations


class BadInput(ValueError):
    """Input that cannot work as given: a bad flag, file, URL or config. str() is the one-line message."""


class WorkFailed(RuntimeError):
    """Work that was attempted and failed (some shards, a training); rerunning may succeed."""
