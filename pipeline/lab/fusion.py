"""The ensemble's member search: every set of one to four candidate detectors, fused by each rank fusion
(ensemble.FUSIONS), scored on the cached runs of results.json's default auxiliary set without rescoring anything. Sets are
ranked on the validation pools (`val-0.5`, `val-0.01`: CIFAR-10 train images no decoder read), by the mean TPR at 1%
clean FPR over the 1%-poisoned ones (the issue's bar is a TPR at the threshold; AUC breaks ties) or by mean AUC, and the
test pools' figures (the detection table's) are reported beside, never used to rank; so are extra runs (the demo's).
Each member is ranked against the victim's 1% pool of the same split (99% clean), the stand-in for the
clean hold-out the job ranks against. Writes results/fusion.json and results/fusion.md."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.detect.ensemble import DEFAULT_FUSION, FUSIONS, fuse, percentile
from pipeline.detect.metrics import auc, tpr_at_fpr
from pipeline.detect.spec import DEFAULT_ENSEMBLE, column
from pipeline.errors import BadInput
from pipeline.lab.detect import DEFAULT_AUX, ground_truth, read_scores
from pipeline.lab.detect_data import POOLS, VALIDATION_POOLS, detect_cache

CANDIDATES = ("dede", "dede-rel", "dede-region", "occlusion", "transplant", "slof:bank", "kdist:bank", "dao:bank", "dao-dense:bank",
              "norm:bank", "spectral:bank", "iforest:bank", "kdist-dense", "kdist", "norm", "spectral", "iforest")
SPLITS = {"validation": (VALIDATION_POOLS, "val-0.01"), "test": (POOLS, "0.01")}
"""Split -> (its pools, the pool its members are ranked against)."""
RANK_BY = ("tpr", "auc")
"""Ranking rules: the mean validation TPR at 1% FPR over the 1%-poisoned cells (then mean AUC), or the mean AUC."""


@dataclass(frozen=True)
class Cell:
    """One pool's ok rows: their ground truth and, per candidate, their scores' percentiles against the cell's
    reference run (the job's Ensemble rule), computed once for every member set."""

    labels: np.ndarray
    percentiles: dict[str, np.ndarray]


def _cell(table: dict, ref: dict) -> Cell:
    ok, y = ground_truth(table)
    return Cell(y[ok], {m: percentile(np.nan_to_num(np.asarray(table[column(m)], float)[ok]),
                                      np.nan_to_num(np.asarray(ref[column(m)], float))) for m in CANDIDATES})


def cell_tables(results: dict[str, Any], extra: dict[str, Path], split: str = "validation") -> dict[str, Cell]:
    """cell name -> Cell: attack@pool of the split's runs, ranked against the attack's reference pool, and each
    extra run (its own reference)."""
    pools, reference = SPLITS[split]
    cols = [column(c) for c in CANDIDATES]
    cells: dict[str, Cell] = {}
    for attack, entry in results.get("attacks", {}).items():
        runs = entry.get("runs", {}).get(DEFAULT_AUX, {})
        if reference not in runs:
            continue
        ref = read_scores(detect_cache() / runs[reference]["run"], cols)
        for pool in pools:
            if pool in runs:
                cells[f"{attack}@{pool}"] = _cell(read_scores(detect_cache() / runs[pool]["run"], cols), ref)
    for name, run_dir in extra.items():
        table = read_scores(run_dir, cols)
        cells[name] = _cell(table, table)
    return cells


def fused_metrics(cell: Cell, members: tuple[str, ...], fusion: str) -> tuple[float, float]:
    """AUC and oracle TPR at 1% clean FPR of the members' rank fusion in `cell`."""
    scores = fuse([cell.percentiles[m] for m in members], fusion)
    return float(auc(cell.labels, scores)), tpr_at_fpr(cell.labels, scores, 0.01)


def _one_percent(cell: str) -> bool:
    """Whether a cell (attack@pool) is a split's 1%-poisoned pool (the cells the TPR rule averages)."""
    return "@" in cell and cell.rsplit("@", 1)[1] in {pool for _, pool in SPLITS.values()}


def _prefixed(results: dict[str, Any], also: dict[str, dict[str, Any]], split: str) -> dict[str, Cell]:
    """The split's cells of `results` and of each other results.json in `also`, whose cells are named NAME/cell."""
    cells = cell_tables(results, {}, split)
    for name, other in also.items():
        cells.update({f"{name}/{c}": cell for c, cell in cell_tables(other, {}, split).items()})
    return cells


def search(results: dict[str, Any], extra: dict[str, Path], size: int = 4, keep: int = 40,
           progress: bool = True, also: dict[str, dict[str, Any]] | None = None,
           rank_by: str = "tpr") -> dict[str, Any]:
    """Every member set's AUC and TPR at 1% FPR per cell, ranked by `rank_by` (RANK_BY) over the validation cells
    (test cells and extra runs reported, not ranked); `also`: more results.json by name (other victims, e.g. other
    triggers), whose validation cells join the ranking and test cells the report; keeps the `keep` best sets and the
    default's."""
    if rank_by not in RANK_BY:
        raise BadInput(f"rank_by {rank_by!r}: use one of {', '.join(RANK_BY)}")
    ranked = _prefixed(results, also or {}, "validation")
    if not ranked:
        raise BadInput("results.json holds no validation runs: run jobs/lab_detect.py --pools val-0.5 val-0.01 "
                       "--aux id first")
    tpr_cells = [c for c in ranked if _one_percent(c)]
    if rank_by == "tpr" and not tpr_cells:
        raise BadInput("ranking by TPR needs 1%-poisoned validation runs: run jobs/lab_detect.py --pools val-0.01")
    cells = {**ranked, **_prefixed(results, also or {}, "test"), **cell_tables({}, extra, "test")}
    test_cells = [c for c in cells if c not in ranked and c not in extra]
    rows = []
    sets = [(members, fusion) for k in range(1, size + 1) for members in itertools.combinations(CANDIDATES, k)
            for fusion in (FUSIONS if k > 1 else ("mean",))]
    for members, fusion in tqdm(sets, desc="member sets", disable=not progress):
        metrics = {c: fused_metrics(cell, members, fusion) for c, cell in cells.items()}
        aucs = {c: round(m[0], 4) for c, m in metrics.items()}
        tprs = {c: round(m[1], 4) for c, m in metrics.items()}
        vals = [aucs[c] for c in ranked]
        tests = [aucs[c] for c in test_cells]
        val_tpr = [tprs[c] for c in tpr_cells]
        rows.append({"members": list(members), "fusion": fusion, "validation_mean": round(float(np.mean(vals)), 4),
                     "validation_min": round(float(min(vals)), 4),
                     "validation_tpr": round(float(np.mean(val_tpr)), 4) if val_tpr else None,
                     "validation_tpr_min": round(float(min(val_tpr)), 4) if val_tpr else None,
                     "test_mean": round(float(np.mean(tests)), 4) if tests else None, "auc": aucs, "tpr": tprs})
    first = (lambda r: -r["validation_tpr"]) if rank_by == "tpr" else (lambda r: 0.0)
    rows.sort(key=lambda r: (first(r), -r["validation_mean"], r["members"], r["fusion"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    default = (list(DEFAULT_ENSEMBLE), DEFAULT_FUSION)
    kept = [r for r in rows if r["rank"] <= keep or (r["members"], r["fusion"]) == default]
    return {"candidates": list(CANDIDATES), "fusions": list(FUSIONS), "max_size": size, "rank_by": rank_by,
            "tpr_cells": tpr_cells, "cells": list(ranked),
            "test_cells": test_cells, "extra": list(extra),
            "reference_pool": SPLITS["validation"][1], "default": {"members": default[0], "fusion": default[1]},
            "searched": len(rows), "sets": kept}


def _figure(r: dict[str, Any], cell: str) -> str:
    """One cell's AUC, and for a 1%-poisoned cell its TPR at 1% FPR (files before the field: AUC alone)."""
    tpr = r.get("tpr", {}).get(cell)
    return f"{r['auc'][cell]:.3f}" + (f" / {100 * tpr:.0f}%" if tpr is not None and _one_percent(cell) else "")


def render(fusion: dict[str, Any], top: int = 15) -> str:
    """results/fusion.md from fusion.json alone: the top sets and the default's row."""
    tests = fusion.get("test_cells", [])
    cells = fusion["cells"] + tests + fusion["extra"]
    rank_by = fusion.get("rank_by", "auc")                     # files before the field ranked by AUC
    rule = (f"ranked by the mean TPR at 1% clean FPR over the {len(fusion.get('tpr_cells', []))} 1%-poisoned "
            f"validation cells, then the mean AUC over all {len(fusion['cells'])}" if rank_by == "tpr" else
            f"ranked by the mean AUC over the {len(fusion['cells'])} validation cells")
    head = ("| rank | members | fusion | validation TPR mean | validation TPR min | validation AUC mean | "
            "validation AUC min | test AUC mean | " + " | ".join(cells) + " |")
    lines = ["# Ensemble member search", "",
             "<!-- generated by jobs/lab_fusion.py from fusion.json; do not edit -->", "",
             f"- command: `{fusion.get('command')}`; commit `{fusion.get('commit')}`",
             f"- {fusion['searched']} sets of 1-{fusion.get('max_size', 3)} of {len(fusion['candidates'])} detectors, "
             f"{' or '.join(fusion.get('fusions', ('mean', 'max')))} rank fusion, "
             f"each member ranked against the victim's 1% pool of the same split; {rule} (CIFAR-10 train images no "
             f"decoder read); the test cells (the detection table's pools) and extra runs "
             f"({', '.join(fusion['extra']) or 'none'}) are reported, not ranked",
             "- a cell: AUC, and at a 1%-poisoned pool also the oracle TPR at 1% clean FPR", "",
             head, "|" + "---|" * (8 + len(cells))]
    default = fusion["default"]["members"], fusion["default"].get("fusion", "mean")   # files before the field: mean
    for r in fusion["sets"]:
        is_default = (r["members"], r["fusion"]) == default
        if r["rank"] <= top or is_default:
            mark = " (default)" if is_default else ""
            fig = {k: "-" if r.get(k) is None else f"{r[k]:.3f}" for k in ("validation_mean", "validation_min",
                                                                           "test_mean")}
            tpr = {k: "-" if r.get(k) is None else f"{100 * r[k]:.1f}%" for k in ("validation_tpr",
                                                                                  "validation_tpr_min")}
            lines.append(f"| {r['rank']} | {' + '.join(r['members'])}{mark} | {r['fusion']} | {tpr['validation_tpr']} | "
                         f"{tpr['validation_tpr_min']} | {fig['validation_mean']} | {fig['validation_min']} | "
                         f"{fig['test_mean']} | " + " | ".join(_figure(r, c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write(folder: Path, fusion: dict[str, Any]) -> None:
    from pipeline.storage import write_text_atomic

    write_text_atomic(str(folder / "fusion.json"), json.dumps(fusion, indent=1) + "\n")
    write_text_atomic(str(folder / "fusion.md"), render(fusion))
