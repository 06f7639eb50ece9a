"""A scoring run as the analysis reads it: run.json, the shards' stats, and their scores Parquet streamed
in record batches (never one whole-table load), with a progress bar."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.errors import BadInput, one_line
from pipeline.job import outputs as O

REQUIRED = ("key", "shard", "index", "status", "error", "score", "threshold", "flagged")
OPTIONAL = ("caption", "embedding", "uid")
BATCH_ROWS = 65536


@dataclass
class RunFiles:
    """What a run folder holds: run.json (None while unfinished), stats by stem, scores files by stem."""

    url: str
    run: dict | None
    stats: dict[str, dict]
    scores: dict[str, str]                   # stem -> Parquet URL
    rows: int                                # rows over every scores file (from the footers)
    columns: set[str]                        # optional columns that every scores file has
    incomplete: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.incomplete


def _stems(fs, root: str, folder: str, suffix: str) -> dict[str, str]:
    """stem -> path of every finished file under root/folder (temp files left out)."""
    base = f"{root.rstrip('/')}/{folder}"
    if not fs.isdir(base):
        return {}
    out = {}
    for p in fs.find(base):
        name = p.rsplit("/", 1)[-1]
        if p.endswith(suffix) and not name.startswith("."):
            out[p[len(base) + 1: -len(suffix)]] = p
    return out


def _read_json(fs, path: str, what: str) -> dict:
    try:
        with fs.open(path, "rb") as f:
            obj = json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{what} is not valid JSON: {one_line(e)}") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{what} is not a JSON object")
    return obj


def _footer(fs, path: str, url: str) -> tuple[int, set[str]]:
    """Rows and column names of one scores file; BadInput when it is not a readable scores Parquet."""
    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f)
            rows, names = meta.metadata.num_rows, set(meta.schema_arrow.names)
    except (pa.ArrowException, OSError) as e:
        raise BadInput(f"{url} is not a readable Parquet file: {one_line(e)}") from None
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise BadInput(f"{url} is not a scores file: no column {missing[0]!r}")
    return rows, names


def open_run(url: str) -> RunFiles:
    """The run at `url`; BadInput when it is not a run, holds no samples, or a file of it is unreadable.
    A run that is unfinished (no run.json, shards without stats) comes back with `incomplete` reasons."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        raise BadInput(f"{url} is not a folder")
    run_path = f"{root.rstrip('/')}/run.json"
    run = _read_json(fs, run_path, O.run_url(url)) if fs.exists(run_path) else None
    scores = _stems(fs, root, "scores", ".parquet")
    stats_paths = _stems(fs, root, "stats", ".json")
    if run is None and not scores:
        raise BadInput(f"{url} is not a scoring run (no run.json and no scores/*.parquet)")
    stats = {s: _read_json(fs, p, O.stats_url(url, s)) for s, p in sorted(stats_paths.items())}
    incomplete = []
    if run is None:
        incomplete.append("no run.json: the run has not finished (or is still running)")
        stems = sorted(set(scores) | set(stats))
    else:
        stems = [s["stem"] for s in run.get("shards", [])]
    no_stats = [s for s in stems if s not in stats]
    if no_stats:
        incomplete.append(f"{len(no_stats)} of {len(stems)} shards have no stats yet (e.g. {no_stats[0]})")
    no_scores = [s for s in stems if s not in scores]
    if no_scores:
        incomplete.append(f"{len(no_scores)} of {len(stems)} shards have no scores file (e.g. {no_scores[0]})")
    files = {s: O.scores_url(url, s) for s in stems if s in scores}
    rows, columns = 0, set(OPTIONAL)
    for s in files:
        n, names = _footer(fs, scores[s], files[s])
        rows += n
        columns &= names
    if rows == 0:
        raise BadInput(f"{url} holds no samples (its scores files have no rows)")
    return RunFiles(url=url, run=run, stats={s: stats[s] for s in stems if s in stats}, scores=files,
                    rows=rows, columns=columns, incomplete=incomplete)


def batches(run: RunFiles, columns: list[str], progress: bool = True) -> Iterator[pa.RecordBatch]:
    """Every scores row of the run, in stem order, as record batches of `columns`; BadInput naming
    the file when one cannot be read to its end."""
    bar = tqdm(total=run.rows, unit="rows", desc="analyze_scores", leave=False,
               disable=None if progress else True)       # None: no bar when stderr is not a TTY
    try:
        for url in run.scores.values():
            fs, path = fsspec.core.url_to_fs(url)
            try:
                with fs.open(path, "rb") as f:
                    for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                        bar.update(batch.num_rows)
                        yield batch
            except (pa.ArrowException, OSError) as e:
                raise BadInput(f"{url} is not a readable Parquet file: {one_line(e)}") from None
    finally:
        bar.close()
