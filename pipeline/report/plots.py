"""The score histogram: log-scale counts, the threshold and the calibration quantiles; as PNG bytes and
the figures it shows."""
from __future__ import annotations

import io

import numpy as np

BINS = 60


def histogram(scores: np.ndarray, bins: int = BINS) -> dict:
    """Counts of `scores` in log-spaced bins (linear when a score is <= 0)."""
    lo, hi = float(scores.min()), float(scores.max())
    log_x = lo > 0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 1e-3
    edges = np.geomspace(lo, hi, bins + 1) if log_x else np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(scores, edges)
    return {"bin_edges": [float(e) for e in edges], "counts": [int(c) for c in counts], "log_x": log_x}


def histogram_png(hist: dict, threshold: float, quantiles: list[dict]) -> bytes:
    """The histogram as a PNG: bars, the threshold (red) and calibration quantiles (grey, dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    edges = np.asarray(hist["bin_edges"])
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    ax.bar(edges[:-1], np.asarray(hist["counts"]), width=np.diff(edges), align="edge", color="#4c72b0",
           edgecolor="none", label="scored samples")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    if hist["log_x"]:
        ax.set_xscale("log")
    ax.axvline(threshold, color="#c0392b", lw=2, label=f"threshold {threshold:.4g}")
    for i, q in enumerate(quantiles):
        ax.axvline(q["value"], color="#555", ls="--", lw=1, label="clean calibration quantiles" if i == 0 else None)
        ax.annotate(f"q{q['q']:g}", (q["value"], 1), xycoords=("data", "axes fraction"), fontsize=8,
                    rotation=90, va="top", ha="right", color="#555")
    ax.set_xlabel("DeDe score (reconstruction error)")
    ax.set_ylabel("samples (log)")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
