"""Re-split a finished scoring run with another threshold, from its stored scores (no re-scoring), by
the run's flag-by detector as run.json records it (--flag-by of score_corpus, by default the ensemble
when it was computed; DeDe's score for runs recorded without one).

    python jobs/apply_threshold.py --run runs/score --threshold 0.35
    python jobs/apply_threshold.py --run runs/score --threshold gmm
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.job.apply import apply_threshold  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__, prog="apply_threshold")
    ap.add_argument("--run", required=True, help="the --out folder/URL of a finished score_corpus run")
    ap.add_argument("--threshold", required=True, help="a finite number, fpr:X, paper or gmm")
    ap.add_argument("--decoder", default=None, help="decoder folder (default: the one in run.json; for fpr:/paper, and the clean reference "
                         "that fpr:X of the embedding detectors recalibrates from)")
    ap.add_argument("--workers", type=cli.positive_int, default=2, help="shards re-split in parallel (default 2)")
    return ap


def run(a: argparse.Namespace) -> None:
    apply_threshold(a.run, a.threshold, a.decoder, a.workers)


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
