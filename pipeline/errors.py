"""The library's two error types: bad input (the user can fix it; CLIs exit 2) and failed work (exit 1).

The library raises these (or ValueError / FileNotFoundError for bad input) and never exits the
process; `pipeline.cli` turns them into one line on stderr.
"""
from __future__ import annotations


class BadInput(ValueError):
    """Input that cannot work as given: a bad flag, file, URL or config. str() is the one-line message."""


class WorkFailed(RuntimeError):
    """Work that was attempted and failed (some shards, a training); rerunning may succeed."""


def one_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


def describe(e: BaseException) -> str:
    """`Type: first line of the message`, or just `Type` when the message is empty."""
    text = one_line(e)
    return type(e).__name__ if text == type(e).__name__ else f"{type(e).__name__}: {text}"
