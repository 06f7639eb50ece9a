"""Copy every cached lab card to results/lab/cards, plot the curves, and regenerate the tables of
results/encoders.md (between its generated-block markers; printed when the file is absent)."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.lab.report import curve_table, export, fill, plot_curves, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("results/lab"))
    ap.add_argument("--document", type=Path, default=Path("results/encoders.md"))
    a = ap.parse_args()
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


if __name__ == "__main__":
    main()
