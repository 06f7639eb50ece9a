#!/usr/bin/env python3
"""Does `fpr:X` hold its rate where the auxiliary set is drawn like the corpus? Rescores the calibration measurement's
cached score runs (jobs/lab_detect.py --calibration-seeds) offline with the product's `calibrate`, once with each
decoder's own hold-out and bank (CIFAR-10 train, the clean encoder's training images) and once with a hold-out and bank
drawn from half the clean test rows, counting flags on the other half (pipeline/lab/calibration_shift.py); writes
RESULTS/calibration_shift.json and RESULTS/calibration_shift.md.

  lab_calibration_shift.py                      # after lab_detect.py --calibration-seeds 5
  lab_calibration_shift.py --render             # rewrite calibration_shift.md from its json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.lab import calibration_shift, detect_report  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--splits", type=cli.positive_int, default=calibration_shift.SPLITS,
                    help="random halvings of the clean test rows per decoder seed")
    ap.add_argument("--results", type=Path, default=Path("results"),
                    help="folder of results.json (read) and calibration_shift.* (written)")
    ap.add_argument("--render", action="store_true", help="only rewrite calibration_shift.md from its json")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    return ap


def run(a: argparse.Namespace) -> None:
    res = None
    if not a.render:
        calibration = detect_report.load(a.results).get("calibration")
        if not calibration:
            raise BadInput(f"{a.results / detect_report.RESULTS} has no calibration block: run "
                           f"jobs/lab_detect.py --calibration-seeds 5 first")
        res = calibration_shift.measure(calibration, a.splits, a.progress)
        res.update(detect_report.meta(a.argv, "jobs/lab_calibration_shift.py"))
    detect_report.write_generated(a.results, "calibration_shift", res, calibration_shift.render,
                                  "jobs/lab_calibration_shift.py")


def main(argv: list[str] | None = None) -> int:
    return cli.main_recorded(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
