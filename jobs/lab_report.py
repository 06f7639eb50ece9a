"""Print the markdown table of every cached lab card, copy the cards to results/lab/cards and plot the curves."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.lab.report import export, plot_curves, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("results/lab"))
    a = ap.parse_args()
    rows = export(a.out)
    simclr = {p.stem.removesuffix("-curve"): p for p in sorted(a.out.glob("simclr-w*-curve.jsonl"))}
    if simclr:
        plot_curves(simclr, "knn_ca", a.out / "simclr-knn-vs-minutes.png", "SimCLR kNN CA (monitor subset)")
    clip = a.out / "clip-tiny-curve.jsonl"
    if clip.exists():
        plot_curves({"clip-tiny": clip}, "zero_shot_ca", a.out / "clip-zero-shot-vs-minutes.png", "small CLIP zero-shot")
    print(table(rows))


if __name__ == "__main__":
    main()
