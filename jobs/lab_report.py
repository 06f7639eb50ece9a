"""Copy every cached lab card to results/lab/cards, plot the curves, and regenerate the tables of
results/encoders.md (between its generated-block markers; printed when the file is absent)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.lab.report import curve_table, export, fill, plot_curves, table  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--out", type=Path, default=Path("results/lab"), help="folder for cards and plots")
    ap.add_argument("--document", type=Path, default=Path("results/encoders.md"), help="markdown file to fill")
    return ap


def run(a: argparse.Namespace) -> None:
    rows = export(a.out)
    simclr = {p.stem.removesuffix("-curve"): p for p in sorted(a.out.glob("simclr-w*-curve.jsonl"))}
    if simclr:
        plot_curves(simclr, "knn_ca", a.out / "simclr-knn-vs-minutes.png", "SimCLR kNN CA (monitor subset)")
    clip = a.out / "clip-tiny-curve.jsonl"
    if clip.exists():
        plot_curves({"clip-tiny": clip}, "zero_shot_ca", a.out / "clip-zero-shot-vs-minutes.png", "small CLIP zero-shot")
    parts = ["### Every run (failed tuning attempts included)", table(rows)]
    if simclr:
        parts += ["### SimCLR kNN CA (%) on the monitor subset versus training minutes", curve_table(simclr, "knn_ca")]
    if clip.exists():
        parts += ["### Small CLIP zero-shot CA (%) versus training minutes", curve_table({"clip-tiny": clip}, "zero_shot_ca")]
    generated = "\n\n".join(parts)
    if a.document.exists():
        fill(a.document, generated)
        print(f"wrote {a.document}")
    else:
        print(generated)


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
