"""Analyse a scoring run: the backdoor verdict, score histogram, shards, suspected target, gallery and errors.

    python jobs/analyze_scores.py runs/score                       # writes runs/score/report/
    python jobs/analyze_scores.py s3://bucket/run1 --decoder decoders/r18 --out reports/run1

Writes report.html (one self-contained page), summary.json (schemas/summary.schema.json),
flagged.parquet / keep.parquet (key, shard, index, score) and, when the samples carry a DataComp `uid`,
keep_uids.npy / remove_uids.npy for DataComp's resharder. An unfinished run is reported as incomplete.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.report.analyze import analyze_run  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__, prog="analyze_scores")
    ap.add_argument("run", metavar="RUN", help="a score_corpus --out folder or fsspec URL")
    ap.add_argument("--decoder", default=None,
                    help="decoder folder: calibration and reconstructions (default: the one run.json names, when readable)")
    ap.add_argument("--out", default=None, help="report folder (default RUN/report)")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap


def run(a: argparse.Namespace) -> None:
    summary = analyze_run(a.run, decoder_dir=a.decoder, out=a.out, progress=not a.no_progress)
    if not summary["complete"]:
        print(f"analyze_scores: incomplete run: {'; '.join(summary['incomplete'])}")
    print(summary["verdict"]["line"])
    print(f"report: {summary['report'].rstrip('/')}/report.html")


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
