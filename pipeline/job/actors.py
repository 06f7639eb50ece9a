"""The Ray Data stages of score_corpus: `ShardScorer` (a callable class; one shard per call),
`finalize_batch` (re-splits shards from stored scores) and `ShardDetector` (the embedding detectors'
columns, then the split). Run-wide settings are fixed at construction; rows carry only each shard's
url and stem."""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from pipeline.corpus.limits import Limits
from pipeline.job.attempts import attempt
from pipeline.job.detectors import detect_shard
from pipeline.job.outputs import FlagRule
from pipeline.job.shard import ShardTask, finalize_from_scores, score_shard


def _set_env(env: dict[str, str]) -> None:
    for k, v in env.items():
        os.environ.setdefault(k, v)


class ShardScorer:
    """`map_batches(ShardScorer, batch_size=1, fn_constructor_kwargs=...)`: loads encoder + decoder once,
    then scores, routes and writes each shard it is given; returns one summary row per shard."""

    def __init__(self, *, decoder: str, out: str, threshold: float | None, finalize: bool, batch_size: int,
                 threads: int, store_embeddings: bool, carry_fields: tuple[str, ...], max_attempts: int,
                 limits: Limits, env: dict[str, str], images: tuple[str, ...] = ()):
        import torch

        _set_env(env)
        torch.set_num_threads(max(1, threads))
        from pipeline.dede.scorer import Scorer

        self.scorer = Scorer(decoder)
        self.out = out
        self.threshold = math.nan if threshold is None else float(threshold)
        self.finalize = finalize
        self.batch_size = batch_size
        self.threads = threads
        self.store_embeddings = store_embeddings
        self.images = tuple(images)
        self.carry_fields = tuple(carry_fields)
        self.max_attempts = max_attempts
        self.limits = limits

    def _task(self, url: str, stem: str) -> ShardTask:
        return ShardTask(url=url, stem=stem, out=self.out, threshold=self.threshold, finalize=self.finalize,
                         store_embeddings=self.store_embeddings, images=self.images,
                         carry_fields=self.carry_fields, limits=self.limits)

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        rows = []
        for url, stem in zip(batch["url"], batch["stem"]):
            task = self._task(str(url), str(stem))
            rows.append(attempt(lambda: score_shard(self.scorer, task, self.batch_size, self.threads),
                                self.out, task.stem, self.max_attempts))
        return pd.DataFrame(rows)


def finalize_batch(batch: dict[str, np.ndarray], *, out: str, rule: FlagRule, max_attempts: int,
                   limits: Limits, env: dict[str, str]) -> pd.DataFrame:
    """Ray task UDF for runs whose threshold needs every score first (gmm): apply it from the Parquet."""
    _set_env(env)
    rows = []
    for url, stem in zip(batch["url"], batch["stem"]):
        rows.append(attempt(lambda: finalize_from_scores(out, str(url), str(stem), rule, limits=limits),
                            out, str(stem), max_attempts))
    return pd.DataFrame(rows)


class ShardDetector:
    """`map_batches(ShardDetector, batch_size=1, fn_constructor_kwargs=...)`: the embedding detectors'
    phase. The driver fitted the detectors once and put them in the object store (`suite`, an ObjectRef);
    each actor fetches them once, which rebuilds their faiss indexes, then adds the `det_*` columns to
    each shard's stored scores and routes it by `rule` (None: only the columns, for gmm)."""

    def __init__(self, *, suite, out: str, rule: FlagRule | None, threads: int, max_attempts: int,
                 limits: Limits, env: dict[str, str]):
        import faiss
        import ray

        _set_env(env)
        faiss.omp_set_num_threads(max(1, threads))
        self.suite = ray.get(suite) if isinstance(suite, ray.ObjectRef) else suite
        self.out, self.rule, self.max_attempts, self.limits = out, rule, max_attempts, limits

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        rows = []
        for url, stem in zip(batch["url"], batch["stem"]):
            rows.append(attempt(lambda: detect_shard(self.out, str(url), str(stem), self.suite, self.rule, self.limits),
                                self.out, str(stem), self.max_attempts))
        return pd.DataFrame(rows)
