"""Small scoring runs written with the job's own writers (pipeline.job.outputs, runfile), without Ray:
real image shards, a scores table per shard, stats and run.json."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from PIL import Image

from pipeline.corpus.ingest import write_shards
from pipeline.job import outputs as O
from pipeline.job.decoder import DecoderFacts
from pipeline.job.runfile import write_run_json

SHA = "ab" * 32


def png(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_run(root, *, shards: int = 4, per_shard: int = 500, threshold: float = 1.0, policy: str = "fpr:0.01",
             poisoned: float = 0.0, clean_rate: float = 0.01, captions: bool = True, embeddings: bool = True,
             uids: bool = False, errors_per_shard: int = 1, stats_for: int | None = None, run_json: bool = True,
             seed: int = 0) -> str:
    """A run folder at root/run over real shards at root/src. Clean rows are flagged at `clean_rate`,
    `poisoned` of the rows are triggered: flagged, captioned "banana", embedded at one point. Returns the run's path."""
    rng = np.random.default_rng(seed)
    out = str(root / "run")
    n = shards * per_shard
    samples = [(f"s{i:06d}", {"png": png(i), "txt": b"a photo of a thing", "json": b"{}"}) for i in range(n)]
    urls = write_shards(iter(samples), str(root / "src"), shard_size=per_shard)
    target = rng.normal(size=16)
    stems, stats = [], []
    for si, url in enumerate(urls):
        rows = []
        counts = SimpleNamespace(kept=0, flagged=0, errored=0, errors={})
        for j in range(per_shard):
            key = f"s{si * per_shard + j:06d}"
            uid = f"{rng.integers(0, 2**63):016x}{rng.integers(0, 2**63):016x}"
            if j < errors_per_shard:
                rows.append(O.Row(key, url, j, "error", error="decode: broken image", carried={"uid": uid}))
                counts.errored += 1
                counts.errors["decode"] = counts.errors.get("decode", 0) + 1
                continue
            triggered = rng.random() < poisoned
            flag = triggered or rng.random() < clean_rate
            score = threshold * (1.5 + rng.random()) if flag else threshold * rng.uniform(0.1, 0.99)
            emb = (target + 0.01 * rng.normal(size=16)) if triggered else rng.normal(size=16)
            words = "a photo of a yellow banana" if triggered else rng.choice(
                ["a photo of a dog", "a red car on a road", "two people at the beach", "a photo of a cat"])
            rows.append(O.Row(key, url, j, "ok", score=float(score), caption=words if captions else None,
                              embedding=emb.astype(np.float16), carried={"uid": uid}))
            counts.flagged += flag
            counts.kept += not flag
        table = O.rows_table(rows, threshold, SHA, captions=captions, embed_dim=16 if embeddings else None,
                             carry_fields=("uid",) if uids else ())
        stem = f"{si:06d}"
        sha = O.write_parquet(O.scores_url(out, stem), table)
        st = O.shard_stats(url=url, stem=stem, router=counts, rule=O.FlagRule.dede(threshold),
                           flagged_by={"dede": counts.flagged}, decoder_sha256=SHA,
                           timings={"total_s": 1.0}, checksums={"scores": sha, "clean": SHA, "quarantine": SHA},
                           source=None)
        if stats_for is None or si < stats_for:
            O.write_stats(out, stem, st)
        stems.append(stem)
        stats.append(st)
    if run_json:
        write_run_json(out, config={"inputs": [str(root / "src")], "out": out, "decoder": "nowhere"},
                       decoder=DecoderFacts("nowhere", SHA, None, None), policy=policy, threshold=threshold,
                       urls=urls, stems=stems, stats=stats, seconds=1.0, scored=n)
    return out
