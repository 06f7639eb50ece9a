"""The embedding detectors in a scoring run (`score_corpus --detectors`): the corpus reference sample
streamed from the stored embeddings, the detectors fitted and calibrated on it and the decoder's clean
reference (pipeline.detect.calibrate), one shard's `det_*` columns, and every detector's threshold at
the run's policy as the `FlagRule` that routes the shards."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.corpus.limits import Limits
from pipeline.dede.reference import CleanReference
from pipeline.dede.thresholds import Calibration, ThresholdPolicy
from pipeline.detect.calibrate import (Calibrated, aux_shift, calibrate, corpus_k, detector_threshold, pseudo_k,
                                      pseudo_rows, shift_tolerance)
from pipeline.detect.density import K
from pipeline.detect.spec import DEDE, DetectorPlan, column
from pipeline.detect.suite import DetectorSuite
from pipeline.errors import BadInput
from pipeline.job import outputs as O
from pipeline.job.errors import JobError
from pipeline.job.shard import finalize_table
from pipeline.keyhash import key_hashes

EMBEDDING = "embedding"
DIFFICULTY = "difficulty"
BATCH_ROWS = 65536
PARALLEL_READS = 16
SHIFT_SAMPLE = 10_000        # reference rows the auxiliary-shift check compares with the bank (ordered by id hash: a uniform draw)


def row_ids(stem: str, keys: list[str]) -> np.ndarray:
    """Corpus row ids: the hash of `<stem>/<key>` (uint64), the same in every run over the same shards."""
    return key_hashes(f"{stem}/{k}" for k in keys)


def _scored(batch: pa.RecordBatch | pa.Table, stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row positions, ids, embeddings (n, d) float16) of the rows that were scored."""
    emb = batch.column(EMBEDDING)
    ok = pc.and_(pc.equal(batch.column("status"), "ok"), pc.is_valid(emb)).fill_null(False)
    pos = np.flatnonzero(np.asarray(ok.to_numpy(zero_copy_only=False), bool))
    keys = batch.column("key").filter(ok).to_pylist()
    return pos, row_ids(stem, keys), O.embedding_rows(emb, ok)


def _stack(emb: np.ndarray | None, more: np.ndarray) -> np.ndarray:
    return more if emb is None else np.concatenate([emb, more])


def _lowest(ids: np.ndarray, emb: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if len(ids) <= size:
        return ids, emb
    keep = np.argpartition(ids, size - 1)[:size]
    return ids[keep], emb[keep]


def _shard_lowest(out: str, stem: str, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One shard's `size` scored rows of lowest id, read in record batches of three columns."""
    fs, path = fsspec.core.url_to_fs(O.scores_url(out, stem))
    ids, emb, n = np.empty(0, np.uint64), None, 0
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        if EMBEDDING not in pf.schema_arrow.names:
            raise JobError(f"{O.scores_url(out, stem)} has no embedding column, which the embedding detectors "
                           "need; rerun with --overwrite")
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["key", "status", EMBEDDING]):
            _, b_ids, b_emb = _scored(batch, stem)
            n += len(b_ids)
            ids, emb = _lowest(np.concatenate([ids, b_ids]), _stack(emb, b_emb), size)
    return ids, emb, n


def reference_sample(out: str, stems: list[str], size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(embeddings (n, d) float16, ids) of the `size` scored rows of lowest id over the shards' stored
    embeddings, in id order, and how many scored rows the shards hold. Streams the Parquet files; holds
    at most `size` rows per shard being read plus the sample."""
    ids, emb, total = np.empty(0, np.uint64), None, 0
    with ThreadPoolExecutor(PARALLEL_READS) as pool:
        for start in range(0, len(stems), PARALLEL_READS):
            for s_ids, s_emb, n in pool.map(lambda s: _shard_lowest(out, s, size), stems[start:start + PARALLEL_READS]):
                total += n
                if s_emb is not None:
                    ids, emb = _lowest(np.concatenate([ids, s_ids]), _stack(emb, s_emb), size)
    if emb is None:
        return np.empty((0, 1), np.float16), ids, total
    order = np.argsort(ids, kind="stable")
    return emb[order], ids[order], total


def _check_reference(clean: CleanReference, reference: np.ndarray, log, prog: str) -> None:
    """Log how in-corpus density is calibrated where it departs from the usual, and warn when the corpus lies
    farther from the auxiliary set than the hold-out does (`aux_shift` on at most SHIFT_SAMPLE reference rows)."""
    rows = len(reference)
    k = corpus_k(rows)
    if k < K:
        log(f"{prog}: fewer than {K + 1} scored samples: in-corpus density compares each with its {k} nearest")
    pseudo = pseudo_rows(clean, rows)
    k_pseudo = pseudo_k(k, pseudo, rows)
    if k_pseudo < k:
        log(f"{prog}: in-corpus density is calibrated on {pseudo} clean rows (hold-out and half the bank) with their "
            f"{k_pseudo} nearest, the corpus reference's {k} scaled to their number")
    sample = reference[:SHIFT_SAMPLE]
    shift = aux_shift(clean, sample)
    if shift is not None and shift > 0.5 + shift_tolerance(len(sample), len(clean.holdout_embeddings)):
        log(f"{prog}: warning: the corpus lies farther from the auxiliary set than its own hold-out does ({shift:.0%} "
            f"of the reference sample is farther from the bank than the hold-out's median row, 50% expected): the "
            f"thresholds calibrated on it may flag more or fewer clean rows than asked; auxiliary data drawn like "
            f"the corpus keeps them")


def prepare(plan: DetectorPlan, clean: CleanReference, dede: Calibration, out: str, stems: list[str],
            size: int, log, prog: str = "score_corpus", bank_trim: float = 0.0) -> Calibrated:
    """The run's detectors fitted on the corpus reference sample (of `size` rows at most) and the bank,
    and calibrated on the hold-out; a one-line JobError when a reference is too small."""
    if plan.in_corpus:
        reference, ids, total = reference_sample(out, stems, size)
        log(f"{prog}: in-corpus reference: {len(ids)} of {total} scored samples (lowest hash of stem/key)")
        _check_reference(clean, reference, log, prog)
    else:
        reference, ids = np.empty((0, clean.bank_embeddings.shape[1]), np.float16), np.empty(0, np.uint64)
    try:
        return calibrate(plan, clean, reference, ids, dede, bank_trim=bank_trim)
    except BadInput as e:
        raise JobError(f"--detectors {','.join(plan.names)}: {e}") from None


def thresholds(policy: ThresholdPolicy, plan: DetectorPlan, calibrations: dict[str, Calibration] | None,
               out: str, stems: list[str]) -> dict[str, float | None]:
    """Every detector's threshold at `policy` (gmm: fit on the column's corpus scores in `out`)."""
    cal = calibrations or {}
    return {n: detector_threshold(policy, n, cal.get(n), O.all_scores(out, stems, column(n)) if policy.needs_scores
                                  else None) for n in plan.names}


def flag_rule(plan: DetectorPlan, by_name: dict[str, float | None]) -> O.FlagRule:
    """The rule that routes a detectors run: the flag-by detector's column over its threshold (all
    thresholds taken at float32, the Parquet's precision, so `flagged` is exactly column > threshold)."""
    t32 = {n: None if t is None else float(np.float32(t)) for n, t in by_name.items()}
    return O.FlagRule(t32[plan.flag_by], column(plan.flag_by), plan.flag_by,
                      {n: (column(n), t32[n]) for n in plan.names})


def rule_from_stats(stats: dict) -> O.FlagRule:
    """The rule a finished shard was routed by, as its stats record it (stats before the detectors
    existed: DeDe's score over the recorded threshold)."""
    if "detectors" not in stats:
        return O.FlagRule.dede(stats["threshold"])
    dets = {n: (d["column"], d["threshold"]) for n, d in stats["detectors"].items()}
    return O.FlagRule(stats["threshold"], dets[stats["flag_by"]][0], stats["flag_by"], dets)


def _rows(table: pa.Table, stem: str, name: str, pos: np.ndarray, why: str) -> np.ndarray:
    """Column `name` of a shard's stored scores at rows `pos`, as float64; a JobError saying `why` it is needed when
    the shard was written without it."""
    if name not in table.column_names:
        raise JobError(f"scores/{stem}.parquet has no {name} column, {why}; rerun with --overwrite")
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), np.float64)[pos]


def add_columns(table: pa.Table, stem: str, suite: DetectorSuite) -> pa.Table:
    """The shard's table with one float32 `det_*` column per detector of the suite's plan (null where
    the row was not scored), replacing any it had, after the other columns."""
    pos, ids, emb = _scored(table, stem)
    dede = np.asarray(table.column("score").to_numpy(zero_copy_only=False), np.float64)[pos]
    difficulty = _rows(table, stem, DIFFICULTY, pos, f"which {suite.plan.needs_difficulty[0]} needs (written before "
                       "it existed)") if suite.plan.needs_difficulty else None
    images = {n: _rows(table, stem, n, pos, f"which the {n} detector needs (scored without it)")
              for n in suite.plan.image_detectors}
    scores = suite.score(emb, ids, dede, difficulty, images)
    names = [n for n in suite.plan.names if n != DEDE]
    table = table.drop_columns([c for c in table.column_names if c.startswith("det_")])
    mask = np.ones(table.num_rows, bool)
    mask[pos] = False
    for name in names:
        values = np.zeros(table.num_rows, np.float32)
        values[pos] = scores[name]
        table = table.append_column(pa.field(column(name), pa.float32()), pa.array(values, pa.float32(), mask=mask))
    return table


def detect_shard(out: str, url: str, stem: str, suite: DetectorSuite, rule: O.FlagRule | None,
                 limits: Limits = Limits()) -> dict:
    """Add the detector columns to a shard's stored scores, then route it by `rule` (stats last); with
    `rule=None` (gmm: the thresholds need every shard's columns first) write only the Parquet."""
    table = add_columns(O.read_parquet(O.scores_url(out, stem)), stem, suite)
    if rule is None:
        O.write_parquet(O.scores_url(out, stem), table)
        return {"stem": stem, "shard": url, "read": table.num_rows}
    return finalize_table(out, url, stem, table, rule, limits=limits)


def _flagged(stats: dict, name: str, by: str) -> int | None:
    if "detectors" in stats:
        return stats["detectors"].get(name, {}).get("flagged")
    return stats["flagged"] if name == by else None       # stats written before the detectors existed


def detector_totals(rule: O.FlagRule, stats: list[dict]) -> dict[str, dict]:
    """run.json's `detectors`: by name its column, threshold at the policy and the samples it flags in all
    (null without a threshold)."""
    out = {}
    for name, (col, t) in rule.detectors.items():
        counts = [_flagged(s, name, rule.by) for s in stats]
        out[name] = {"column": col, "threshold": t, "flagged": None if None in counts else int(sum(counts))}
    return out
