"""Run the reproduction matrix (pipeline.lab.matrix): each attack over the grid of triggers x targets with
lab_attack.py's default flags, then write results/matrix.json and the matrix section of results/encoders.md.
Cells are cached like every attack, so a rerun trains nothing; results/matrix.json keeps the rows of cells
run before and replaces those run again.

  lab_matrix.py --clean lab:simclr-r18@CKPT [--clean-clip lab:clip-tiny@CKPT] [--attacks badencoder drupe]
                [--triggers bar-top blend] [--targets 0 9] [--flags "--epochs 1"]

--flags adds lab_attack.py flags to every cell (tiny budgets for tests, say); rows record them, and a
cell run with flags never counts toward reproducing its attack.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import lab_attack  # noqa: E402
from pipeline import cli  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.lab.cache import Entry  # noqa: E402
from pipeline.lab.matrix import GRID_TRIGGERS, MATRIX_ATTACKS, TARGETS, grid, run_matrix, summary, write  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--clean", help="clean SimCLR spec for BadEncoder and DRUPE (lab:simclr-r18@...)")
    ap.add_argument("--clean-clip", help="clean CLIP spec for CLIP-Backdoor (lab:clip-tiny@...)")
    ap.add_argument("--attacks", nargs="+", choices=MATRIX_ATTACKS, default=list(MATRIX_ATTACKS))
    ap.add_argument("--triggers", nargs="+", choices=list(GRID_TRIGGERS), default=list(GRID_TRIGGERS))
    ap.add_argument("--targets", nargs="+", type=int, default=list(TARGETS))
    ap.add_argument("--flags", default="", help="extra lab_attack.py flags for every cell (recorded in the rows)")
    ap.add_argument("--trigger-dir", type=Path, default=Path("results/lab/matrix-triggers"),
                    help="where the grid's trigger files are written")
    ap.add_argument("--json", type=Path, default=Path("results/matrix.json"))
    ap.add_argument("--document", type=Path, default=Path("results/encoders.md"),
                    help="markdown file whose matrix block is filled (skipped when absent)")
    cli.add_device(ap)
    return ap


def _attack(argv: list[str]) -> Entry:
    """One cell: lab_attack.py's own parsing and attack."""
    return lab_attack.attack(lab_attack.build_parser().parse_args(argv))


def run(a: argparse.Namespace) -> None:
    clean = {"badencoder": a.clean, "drupe": a.clean, "clip-backdoor": a.clean_clip}
    for attack in a.attacks:
        if not clean[attack]:
            raise BadInput(f"{attack} needs {'--clean-clip' if attack == 'clip-backdoor' else '--clean'} SPEC")
    runtime = ["--device", a.device] + (["--threads", str(a.threads)] if a.threads else [])
    rows = run_matrix(grid(a.attacks, a.triggers, a.targets), clean, a.trigger_dir, shlex.split(a.flags), runtime,
                      _attack)
    merged = write(rows, a.json, a.document if a.document.exists() else None)
    for attack, line in summary(merged).items():
        print(f"{attack}: {line}")
    print(f"wrote {a.json}" + (f" and {a.document}" if a.document.exists() else ""))


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
