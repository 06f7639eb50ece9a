"""Score a WebDataset corpus with a DeDe decoder on Ray Data; write scores, clean and quarantine shards.
By default the ensemble of --ensemble's members (DeDe and its partner) is computed and sets the split.

    python jobs/score_corpus.py --input 'shards/{000000..000009}.tar' --decoder runs/dede --out runs/score
    python jobs/score_corpus.py ... --detectors dede          # DeDe alone (one phase, flag-by dede)
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/score_corpus.py ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.corpus.limits import Limits  # noqa: E402
from pipeline.job.attempts import DEFAULT_MAX_ATTEMPTS  # noqa: E402
from pipeline.detect.ensemble import DEFAULT_FUSION, FUSIONS  # noqa: E402
from pipeline.detect.registry import DETECTORS  # noqa: E402
from pipeline.detect.spec import DEFAULT_DETECTORS, DEFAULT_ENSEMBLE, plan_detectors  # noqa: E402
from pipeline.job.config import DEFAULT_BANK_TRIM, DEFAULT_REFERENCE, JobConfig  # noqa: E402
from pipeline.job.run import run_job  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__, prog="score_corpus")
    ap.add_argument("--input", "-i", action="append", required=True,
                    help="shards: path, folder, glob, {000..009} braces or fsspec URL (s3://, gs://); repeatable")
    ap.add_argument("--decoder", required=True, help="trained decoder folder (jobs/train_decoder.py)")
    ap.add_argument("--out", required=True, help="output folder or fsspec URL")
    ap.add_argument("--threshold", default="fpr:0.01",
                    help="fpr:X (default fpr:0.01), paper (dede only: with --flag-by dede), gmm, or a number")
    ap.add_argument("--batch-size", type=cli.positive_int, default=256, help="images per model call (default 256)")
    ap.add_argument("--actors", type=cli.positive_int, default=None,
                    help="scoring actor pool size (default: GPUs / gpus-per-actor, or CPUs / cpus-per-actor)")
    ap.add_argument("--gpus-per-actor", type=float, default=0.0, help="0 on CPU (default), 1 or a fraction on GPUs")
    ap.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs reserved per actor (default 1)")
    ap.add_argument("--threads", type=cli.positive_int, default=None,
                    help="decode and torch threads per actor (default: cpus-per-actor)")
    ap.add_argument("--store-embeddings", action="store_true",
                    help="add the victim embedding (float16) to the Parquet (always kept when --detectors asks for "
                         "more than dede)")
    ap.add_argument("--detectors", default=",".join(DEFAULT_DETECTORS),
                    help="comma list of detectors to compute, each a det_<name> column (- and : as _) beside DeDe's "
                         f"score: dede (always computed), {', '.join(DETECTORS)} (in-corpus: against a sample "
                         "of the corpus's own embeddings), NAME:bank (against the decoder's clean bank), ensemble "
                         f"(computed with its --ensemble members), or all. Default: {','.join(DEFAULT_DETECTORS)} "
                         f"(computes {', '.join(plan_detectors().names)}). Anything beside dede keeps the "
                         "embeddings, adds a second phase and needs the decoder's clean reference; dede alone "
                         "needs neither")
    ap.add_argument("--flag-by", default=None,
                    help="the detector whose threshold at --threshold sets `flagged` and the clean/quarantine split "
                         "(one of the computed detectors; default: ensemble when it is computed, else dede; "
                         "paper only for dede)")
    ap.add_argument("--ensemble", default=",".join(DEFAULT_ENSEMBLE),
                    help=f"members of the ensemble detector, ranked by their clean hold-out percentiles "
                         f"(default {','.join(DEFAULT_ENSEMBLE)})")
    ap.add_argument("--fusion", choices=FUSIONS, default=DEFAULT_FUSION,
                    help=f"how the ensemble fuses its members' percentiles: max, mean or fisher (-sum log(1 - p)) (default {DEFAULT_FUSION})")
    ap.add_argument("--density-reference", type=cli.positive_int, default=DEFAULT_REFERENCE,
                    help=f"rows of the in-corpus reference sample (lowest hash of shard stem + key, so reruns pick "
                         f"the same rows; default {DEFAULT_REFERENCE}); the exact k-NN costs about rows x this x dim")
    ap.add_argument("--bank-trim", type=float, default=DEFAULT_BANK_TRIM,
                    help="leave this share of the decoder's bank out before the :bank detectors fit it: the rows whose "
                         "own k-distance is furthest from the bank's median (a slightly poisoned auxiliary set's "
                         f"triggered rows; default {DEFAULT_BANK_TRIM})")
    ap.add_argument("--carry-fields", default="", help="comma-separated .json fields copied into the Parquet")
    ap.add_argument("--overwrite", action="store_true",
                    help="remove this run's own outputs in --out (never other files) and start over")
    ap.add_argument("--redetect", action="store_true",
                    help="recompute a finished run's detectors and clean/quarantine split from its stored scores and "
                         "embeddings, with this command's --detectors, --ensemble, --fusion, --flag-by, --threshold "
                         "and --bank-trim, without scoring the images again (the image detectors' columns must "
                         "have been scored)")
    ap.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")
    ap.add_argument("--max-shards", type=cli.positive_int, default=None, help="first N shards only")
    ap.add_argument("--max-attempts", type=cli.positive_int, default=DEFAULT_MAX_ATTEMPTS,
                    help=f"attempts per shard, process deaths included, before it is reported as failed "
                         f"(default {DEFAULT_MAX_ATTEMPTS})")
    d = Limits()
    ap.add_argument("--max-member-bytes", type=cli.positive_int, default=d.max_member_bytes,
                    help=f"largest tar member read; a sample with a larger one is an error row (default {d.max_member_bytes})")
    ap.add_argument("--max-members", type=cli.positive_int, default=d.max_members,
                    help=f"most members in one sample (default {d.max_members})")
    ap.add_argument("--max-pixels", type=cli.positive_int, default=d.max_pixels,
                    help=f"most pixels of one image, read from its header (default and ceiling {d.max_pixels})")
    ap.add_argument("--max-aspect", type=cli.positive_float, default=d.max_aspect,
                    help=f"largest long-side / short-side ratio of one image (default {d.max_aspect:g})")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress bar: a log line every ~10%% of the shards instead (the default without a TTY "
                         "or under ray job submit)")
    ap.add_argument("--no-report", action="store_true",
                    help="skip the analysis at the end (OUT/report: report.html, summary.json; jobs/analyze_scores.py)")
    return ap


def config(a: argparse.Namespace) -> JobConfig:
    """The parsed flags as a JobConfig."""
    return JobConfig(inputs=a.input, out=a.out, decoder=a.decoder, threshold=a.threshold, batch_size=a.batch_size,
                     actors=a.actors, gpus_per_actor=a.gpus_per_actor, cpus_per_actor=a.cpus_per_actor,
                     threads=a.threads, store_embeddings=a.store_embeddings,
                     carry_fields=[f.strip() for f in a.carry_fields.split(",") if f.strip()],
                     overwrite=a.overwrite, redetect=a.redetect, ray_address=a.ray_address, progress=not a.no_progress,
                     max_shards=a.max_shards, max_attempts=a.max_attempts,
                     limits=Limits(max_member_bytes=a.max_member_bytes, max_members=a.max_members,
                                   max_pixels=a.max_pixels, max_aspect=a.max_aspect),
                     report=not a.no_report, detectors=[n.strip() for n in a.detectors.split(",") if n.strip()],
                     flag_by=a.flag_by, ensemble=[n.strip() for n in a.ensemble.split(",") if n.strip()],
                     fusion=a.fusion, density_reference=a.density_reference, bank_trim=a.bank_trim)


def run(a: argparse.Namespace) -> None:
    run_job(config(a))


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
