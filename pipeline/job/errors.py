"""The job's two error types: bad input (CLIs exit 2) and shards that failed (exit 1)."""
from __future__ import annotations

from pipeline.errors import BadInput, WorkFailed


class JobError(BadInput):
    """Bad input to a scoring or re-split run; str() is the one-line message."""


class ShardsFailed(WorkFailed):
    """Some shards failed after every attempt; the others are done, a rerun retries only the failed ones."""
