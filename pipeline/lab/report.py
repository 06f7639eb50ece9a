"""The lab's results: a markdown table of every cached card, the cards themselves, and CA-versus-minutes plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.lab.cache import cache_dir

def cards() -> list[dict[str, Any]]:
    """Every card in the lab cache, oldest first."""
    found = [json.loads(p.read_text()) for p in cache_dir().glob("*/card.json")]
    return sorted(found, key=lambda c: c.get("finished", ""))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def verdict(card: dict[str, Any]) -> str:
    """Whether a card meets the issue's target for its stage."""
    stage = card["stage"]
    if stage == "clean-simclr":
        ok = card["knn_ca"] >= 0.6 and card["wall_minutes"] <= 60
    elif stage == "clean-clip":
        ok = card["zero_shot_ca"] >= 0.5 and card["wall_minutes"] <= 60
    else:
        ok = card["asr"] >= 0.8 and card.get("ca_drop", 0) <= 0.05
    return "met" if ok else "MISSED"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: encoder, CA, ASR, minutes, verdict, machine, command."""
    head = ("| stage | encoder (cache entry) | CA | ASR | clean CA | train min | wall min | target | machine | command |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for c in rows:
        ca_kind = "kNN" if c["stage"] == "clean-simclr" else ("zero-shot" if "zero_shot_ca" in c else "probe")
        lines.append(
            f"| {c['stage']} | `lab:{c['spec'].split(':', 1)[1].split('@')[0]}` {Path(c['spec'].split('@')[1]).parent.name} "
            f"| {_pct(c['ca'])} ({ca_kind}) | {_pct(c.get('asr'))} | {_pct(c.get('clean_ca'))} | {c['train_minutes']} "
            f"| {c['wall_minutes']} | {verdict(c)} | {c['machine']} | `{c['command']}` |")
    return "\n".join(lines)


def export(out: Path) -> list[dict[str, Any]]:
    """Copy every card (no weights) to out/cards/ and plot the monitor curves to out/*.png; returns the cards."""
    rows = cards()
    (out / "cards").mkdir(parents=True, exist_ok=True)
    for c in rows:
        name = Path(c["spec"].split("@")[1]).parent.name
        (out / "cards" / f"{name}.json").write_text(json.dumps(c, indent=2, sort_keys=True))
    return rows


def plot_curves(curves: dict[str, Path], metric: str, out: Path, title: str) -> None:
    """Plot metric-versus-training-minutes of several jsonl monitor logs into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, path in curves.items():
        pts = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ax.plot([p["train_minutes"] for p in pts], [100 * p[metric] for p in pts], marker="o", label=label)
    ax.set_xlabel("training minutes (monitor time excluded)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
