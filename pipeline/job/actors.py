"""The scoring actor: loads encoder + decoder once, then scores whole shards (one per call)."""
from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from pipeline.job.shard import ShardTask, score_shard

logger = logging.getLogger(__name__)


ATTEMPTS = 2


def _attempt(fn, stem: str) -> dict:
    """Run one shard's work, retrying once on an exception (e.g. a transient storage error). Bad
    samples never raise (they are error rows); what does raise is reported as a failed shard
    instead of aborting every other shard. A killed process is not an exception: Ray restarts the
    actor and retries the shard."""
    err = ""
    for attempt in range(ATTEMPTS):
        try:
            s = fn()
            return {"stem": stem, "read": int(s["read"]), "pid": os.getpid(), "failed": ""}
        except Exception as e:  # noqa: BLE001
            err = f"{type(e).__name__}: {e}"
            logger.warning("shard %s failed (attempt %d/%d): %s", stem, attempt + 1, ATTEMPTS, err)
    return {"stem": stem, "read": 0, "pid": os.getpid(), "failed": err}


class ShardScorer:
    """Callable class for `Dataset.map_batches(batch_size=1)`: each batch is one shard task; the
    result is one small summary row (its stats). Outputs are written by the actor itself."""

    def __init__(self, decoder: str, batch_size: int, threads: int, env: dict | None = None):
        import torch

        for k, v in (env or {}).items():
            os.environ.setdefault(k, v)
        torch.set_num_threads(max(1, threads))
        from pipeline.dede.scorer import Scorer

        self.scorer = Scorer(decoder)
        self.batch_size = batch_size
        self.threads = threads

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        out = []
        for i in range(len(batch["url"])):
            task = ShardTask(url=str(batch["url"][i]), stem=str(batch["stem"][i]), out=str(batch["out"][i]),
                             threshold=float(batch["threshold"][i]), finalize=bool(batch["finalize"][i]),
                             store_embeddings=bool(batch["store_embeddings"][i]),
                             carry_fields=tuple(f for f in str(batch["carry_fields"][i]).split(",") if f))
            out.append(_attempt(lambda: score_shard(self.scorer, task, self.batch_size, self.threads), task.stem))
        return pd.DataFrame(out)


def finalize_batch(batch: dict[str, np.ndarray], env: dict | None = None) -> pd.DataFrame:
    """Ray task UDF for runs whose threshold needs every score first (gmm): apply it from the Parquet."""
    from pipeline.job.shard import finalize_from_scores

    for k, v in (env or {}).items():
        os.environ.setdefault(k, v)

    out = []
    for i in range(len(batch["url"])):
        out.append(_attempt(lambda: finalize_from_scores(str(batch["out"][i]), str(batch["url"][i]),
                                                         str(batch["stem"][i]), float(batch["threshold"][i])),
                            str(batch["stem"][i])))
    return pd.DataFrame(out)
