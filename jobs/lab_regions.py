#!/usr/bin/env python3
"""How many k-means regions `dede-region` should cut the bank into: rescores the detection table's cached score runs
offline at each count (pipeline/lab/regions.py), ranks the counts on the validation pools, reports the test pools;
writes RESULTS/regions.json and RESULTS/regions.md.

  lab_regions.py                      # after lab_detect.py --pools ... val-0.5 val-0.01
  lab_regions.py --render             # rewrite regions.md from its json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.lab import detect_report, regions  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--counts", type=cli.positive_int, nargs="+", default=list(regions.COUNTS),
                    help="region counts to compare")
    ap.add_argument("--results", type=Path, default=Path("results"),
                    help="folder of results.json (read) and regions.* (written)")
    ap.add_argument("--render", action="store_true", help="only rewrite regions.md from its json")
    return ap


def run(a: argparse.Namespace) -> None:
    res = None
    if not a.render:
        res = regions.measure(detect_report.load(a.results), tuple(a.counts))
        res.update(detect_report.meta(a.argv, "jobs/lab_regions.py"))
    detect_report.write_generated(a.results, "regions", res, regions.render, "jobs/lab_regions.py")


def main(argv: list[str] | None = None) -> int:
    return cli.main_recorded(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
