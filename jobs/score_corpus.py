"""Score a WebDataset corpus with a DeDe decoder on Ray Data; write scores, clean and quarantine shards.

    python jobs/score_corpus.py --input 'shards/{000000..000009}.tar' --decoder runs/dede --out runs/score
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/score_corpus.py ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.job.config import JobConfig  # noqa: E402
from pipeline.job.run import main_safe  # noqa: E402


def parse(argv: list[str] | None = None) -> JobConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", "-i", action="append", required=True,
                    help="shards: path, folder, glob, {000..009} braces or fsspec URL (s3://, gs://); repeatable")
    ap.add_argument("--decoder", required=True, help="trained decoder folder (jobs/train_decoder.py)")
    ap.add_argument("--out", required=True, help="output folder or fsspec URL")
    ap.add_argument("--threshold", default="fpr:0.01", help="fpr:X (default fpr:0.01), paper, gmm, or a number")
    ap.add_argument("--batch-size", type=int, default=256, help="images per model call (default 256)")
    ap.add_argument("--actors", type=int, default=None,
                    help="scoring actor pool size (default: GPUs / gpus-per-actor, or CPUs / cpus-per-actor)")
    ap.add_argument("--gpus-per-actor", type=float, default=0.0, help="0 on CPU (default), 1 or a fraction on GPUs")
    ap.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs reserved per actor (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="decode and torch threads per actor (default: cpus-per-actor)")
    ap.add_argument("--store-embeddings", action="store_true", help="add the victim embedding (float16) to the Parquet")
    ap.add_argument("--carry-fields", default="", help="comma-separated .json fields copied into the Parquet")
    ap.add_argument("--overwrite", action="store_true", help="delete this run's outputs and start over")
    ap.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")
    ap.add_argument("--max-shards", type=int, default=None, help="first N shards only")
    ap.add_argument("--no-progress", action="store_true", help="hide Ray Data's progress bars")
    a = ap.parse_args(argv)
    return JobConfig(inputs=a.input, out=a.out, decoder=a.decoder, threshold=a.threshold, batch_size=a.batch_size,
                     actors=a.actors, gpus_per_actor=a.gpus_per_actor, cpus_per_actor=a.cpus_per_actor,
                     threads=a.threads, store_embeddings=a.store_embeddings,
                     carry_fields=[f.strip() for f in a.carry_fields.split(",") if f.strip()],
                     overwrite=a.overwrite, ray_address=a.ray_address, progress=not a.no_progress,
                     max_shards=a.max_shards)


def main(argv: list[str] | None = None) -> int:
    return main_safe(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
