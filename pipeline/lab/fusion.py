"""The ensemble's member search: every set of one to four candidate detectors, fused by each rank fusion
(ensemble.FUSIONS), scored on the cached runs of results.json's default auxiliary set without rescoring anything. Sets are
ranked on the validation pools (`val-0.5`, `val-0.01`: CIFAR-10 train images no decoder read), and the test
pools' AUC (the detection table's) is reported beside, never used to rank; so are extra runs (the demo's).
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
from pipeline.detect.metrics import auc
from pipeline.detect.spec import DEFAULT_ENSEMBLE, column
from pipeline.errors import BadInput
from pipeline.lab.detect import DEFAULT_AUX, ground_truth, read_scores
from pipeline.lab.detect_data import POOLS, VALIDATION_POOLS, detect_cache

CANDIDATES = ("dede", "dede-rel", "dede-region", "occlusion", "transplant", "slof:bank", "kdist:bank", "dao:bank", "dao-dense:bank",
              "norm:bank", "spectral:bank", "iforest:bank", "kdist-dense", "kdist", "norm", "spectral", "iforest")
SPLITS = {"validation": (VALIDATION_POOLS, "val-0.01"), "test": (POOLS, "0.01")}
"""Split -> (its pools, the pool its members are ranked against)."""


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


def fused_auc(cell: Cell, members: tuple[str, ...], fusion: str) -> float:
    """AUC of the members' rank fusion in `cell`."""
    return float(auc(cell.labels, fuse([cell.percentiles[m] for m in members], fusion)))


def _prefixed(results: dict[str, Any], also: dict[str, dict[str, Any]], split: str) -> dict[str, Cell]:
    """The split's cells of `results` and of each other results.json in `also`, whose cells are named NAME/cell."""
    cells = cell_tables(results, {}, split)
    for name, other in also.items():
        cells.update({f"{name}/{c}": cell for c, cell in cell_tables(other, {}, split).items()})
    return cells


def search(results: dict[str, Any], extra: dict[str, Path], size: int = 4, keep: int = 40,
           progress: bool = True, also: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every member set's AUC per cell, ranked by the mean over the validation cells (test cells and extra
    runs reported, not ranked); `also`: more results.json by name (other victims, e.g. other triggers), whose
    validation cells join the ranking and test cells the report; keeps the `keep` best sets and the default's."""
    ranked = _prefixed(results, also or {}, "validation")
    if not ranked:
        raise BadInput("results.json holds no validation runs: run jobs/lab_detect.py --pools val-0.5 val-0.01 "
                       "--aux id first")
    cells = {**ranked, **_prefixed(results, also or {}, "test"), **cell_tables({}, extra, "test")}
    test_cells = [c for c in cells if c not in ranked and c not in extra]
    rows = []
    sets = [(members, fusion) for k in range(1, size + 1) for members in itertools.combinations(CANDIDATES, k)
            for fusion in (FUSIONS if k > 1 else ("mean",))]
    for members, fusion in tqdm(sets, desc="member sets", disable=not progress):
        aucs = {c: round(fused_auc(cell, members, fusion), 4) for c, cell in cells.items()}
        vals = [aucs[c] for c in ranked]
        tests = [aucs[c] for c in test_cells]
        rows.append({"members": list(members), "fusion": fusion, "validation_mean": round(float(np.mean(vals)), 4),
                     "validation_min": round(float(min(vals)), 4),
                     "test_mean": round(float(np.mean(tests)), 4) if tests else None, "auc": aucs})
    rows.sort(key=lambda r: (-r["validation_mean"], r["members"], r["fusion"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    default = (list(DEFAULT_ENSEMBLE), DEFAULT_FUSION)
    kept = [r for r in rows if r["rank"] <= keep or (r["members"], r["fusion"]) == default]
    return {"candidates": list(CANDIDATES), "fusions": list(FUSIONS), "max_size": size, "cells": list(ranked),
            "test_cells": test_cells, "extra": list(extra),
            "reference_pool": SPLITS["validation"][1], "default": {"members": default[0], "fusion": default[1]},
            "searched": len(rows), "sets": kept}


def render(fusion: dict[str, Any], top: int = 15) -> str:
    """results/fusion.md from fusion.json alone: the top sets and the default's row."""
    tests = fusion.get("test_cells", [])
    cells = fusion["cells"] + tests + fusion["extra"]
    head = ("| rank | members | fusion | validation mean | validation min | test mean | "
            + " | ".join(cells) + " |")
    lines = ["# Ensemble member search", "",
             "<!-- generated by jobs/lab_fusion.py from fusion.json; do not edit -->", "",
             f"- command: `{fusion.get('command')}`; commit `{fusion.get('commit')}`",
             f"- {fusion['searched']} sets of 1-{fusion.get('max_size', 3)} of {len(fusion['candidates'])} detectors, "
             f"{' or '.join(fusion.get('fusions', ('mean', 'max')))} rank fusion, "
             f"each member ranked against the victim's 1% pool of the same split; ranked by the mean AUC over the "
             f"{len(fusion['cells'])} validation cells (CIFAR-10 train images no decoder read); the test cells "
             f"(the detection table's pools) and extra runs ({', '.join(fusion['extra']) or 'none'}) are reported, "
             f"not ranked", "",
             head, "|" + "---|" * (6 + len(cells))]
    default = fusion["default"]["members"], fusion["default"].get("fusion", "mean")   # files before the field: mean
    for r in fusion["sets"]:
        is_default = (r["members"], r["fusion"]) == default
        if r["rank"] <= top or is_default:
            mark = " (default)" if is_default else ""
            test = "-" if r.get("test_mean") is None else f"{r['test_mean']:.3f}"
            lines.append(f"| {r['rank']} | {' + '.join(r['members'])}{mark} | {r['fusion']} | {r['validation_mean']:.3f} | "
                         f"{r['validation_min']:.3f} | {test} | " + " | ".join(f"{r['auc'][c]:.3f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write(folder: Path, fusion: dict[str, Any]) -> None:
    from pipeline.storage import write_text_atomic

    write_text_atomic(str(folder / "fusion.json"), json.dumps(fusion, indent=1) + "\n")
    write_text_atomic(str(folder / "fusion.md"), render(fusion))
