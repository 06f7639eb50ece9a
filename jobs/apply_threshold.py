"""Re-split a finished scoring run with another threshold, from its stored scores (no re-scoring).

    python jobs/apply_threshold.py --run runs/score --threshold 0.35
    python jobs/apply_threshold.py --run runs/score --threshold gmm
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.job.apply import apply_threshold  # noqa: E402
from pipeline.job.run import JobError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the --out folder/URL of a finished score_corpus run")
    ap.add_argument("--threshold", required=True, help="a number, fpr:X, paper or gmm")
    ap.add_argument("--decoder", default=None, help="decoder folder (default: the one in run.json; for fpr:/paper)")
    ap.add_argument("--workers", type=int, default=2, help="shards re-split in parallel (default 2)")
    a = ap.parse_args(argv)
    try:
        apply_threshold(a.run, a.threshold, a.decoder, a.workers)
    except (JobError, ValueError, RuntimeError) as e:
        print(f"apply_threshold: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
