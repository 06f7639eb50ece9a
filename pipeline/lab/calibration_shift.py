"""Does the `fpr:X` threshold hold its rate where the auxiliary set is drawn like the corpus? (issue 13, item 7)

The calibration measurement (jobs/lab_detect.py --calibration-seeds) calibrates on CIFAR-10 *train* images, which
the clean SimCLR was trained on, and counts flags among the 10,000 *test* images, which it never saw. This check
reuses those score runs (no rescoring) and splits the test rows at random: half are the rows whose flags are
counted; from the other half the product's own `calibrate` takes a hold-out and a bank of the decoder's sizes. Per
seed's decoder and split, each detector's realised FPR is measured twice on the same counted rows:
- `train-aux`: the decoder's own hold-out and bank (CIFAR-10 train, seen by the encoder), as the product ran;
- `test-aux`: hold-out and bank from the other test half (unseen by the encoder, like the counted rows).
DeDe's hold-out scores in `test-aux` are the test rows' own scores: the decoder never read a test image; likewise the
image detectors' (`transplant` pastes onto the decoder's own recipients in both cases).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from pipeline.dede.config import load_decoder_config
from pipeline.dede.reference import CleanReference, load_reference
from pipeline.dede.thresholds import calibration_summary
from pipeline.detect.calibrate import calibrate, detector_threshold
from pipeline.detect.spec import ENSEMBLE, DetectorPlan, plan_detectors
from pipeline.lab.detect import ground_truth, read_scores
from pipeline.lab.detect_data import detect_cache

SPLITS = 10
AUX_CASES = ("train-aux", "test-aux")
Log = Callable[[str], None]


def find_run(decoder: str, pool: str) -> Path:
    """The cached score run of `pool` by `decoder` (folder names from results.json's calibration block)."""
    for run_file in sorted(detect_cache().glob("score-*/run.json")):
        cfg = json.loads(run_file.read_text())["config"]
        if Path(cfg["decoder"]).name == decoder and [Path(i).name for i in cfg["inputs"]] == [pool]:
            return run_file.parent
    raise FileNotFoundError(f"no score run of pool {pool} by {decoder} in {detect_cache()}: run "
                            f"jobs/lab_detect.py --calibration-seeds first")


def run_plan(run: dict[str, Any]) -> DetectorPlan:
    """The detector plan a score run's run.json records."""
    cfg = run["config"]
    return plan_detectors(cfg["detectors"], cfg.get("flag_by"), cfg["ensemble"], cfg["fusion"])


def realised(clean: CleanReference, counted: dict[str, np.ndarray], run: dict[str, Any]) -> dict[str, float]:
    """Per detector of the run's plan, the share of `counted` rows (embedding, score, difficulty and the plan's image
    detector scores) over the threshold that `calibrate` derives from `clean` at the run's threshold policy."""
    cfg, plan = run["config"], run_plan(run)
    x = counted["embedding"]
    ids = np.arange(len(x))
    cal = calibrate(plan, clean, x, ids, calibration_summary(clean.holdout_scores, np.nan), bank_trim=cfg["bank_trim"])
    scores = cal.suite.score(x, ids, counted["score"], counted["difficulty"],
                             {n: counted[n] for n in plan.image_detectors})
    out = {}
    for name in plan.names:
        t = detector_threshold(cfg["threshold"], name, cal.calibrations[name], scores[name])
        if t is not None:
            out[name] = float((scores[name] > t).mean())
    return out


def measure(calibration: dict[str, Any], splits: int = SPLITS, progress: bool = True,
            log: Log = print) -> dict[str, Any]:
    """Per aux case and detector, the realised FPR over every seed's decoder x `splits` random halvings."""
    rates: dict[str, dict[str, list[float]]] = {case: {} for case in AUX_CASES}
    sizes = {}
    bar = tqdm(total=len(calibration["decoders"]) * splits, desc="calibration shift", disable=not progress)
    for seed, info in enumerate(calibration["decoders"]):
        folder = detect_cache() / info["folder"]
        run_dir = find_run(info["folder"], calibration["pool"])
        run = json.loads((run_dir / "run.json").read_text())
        own = load_reference(str(folder), load_decoder_config(str(folder)))
        images = run_plan(run).image_detectors
        columns = ["embedding", "score", "difficulty", *images]
        table = read_scores(run_dir, columns)
        ok, poisoned = ground_truth(table)
        rows = {k: np.asarray(table[k])[ok & ~poisoned] for k in columns}
        n_hold, n_bank = len(own.holdout_scores), len(own.bank_embeddings)
        sizes = {"holdout": n_hold, "bank": n_bank, "test_rows": int(len(rows["score"]))}
        for split in range(splits):
            order = np.random.default_rng([seed, split]).permutation(len(rows["score"]))
            counted_idx, aux_idx = np.sort(order[:len(order) // 2]), order[len(order) // 2:]
            if len(aux_idx) < n_hold + n_bank:
                raise ValueError(f"half the clean pool ({len(aux_idx)} rows) is smaller than the decoder's hold-out "
                                 f"and bank ({n_hold} + {n_bank})")
            hold, bank = aux_idx[:n_hold], aux_idx[n_hold:n_hold + n_bank]
            counted = {k: v[counted_idx] for k, v in rows.items()}
            test_aux = CleanReference(rows["score"][hold], rows["embedding"][hold], rows["embedding"][bank],
                                      rows["difficulty"][hold], recipients=own.recipients,
                                      **{f"holdout_{n}": rows[n][hold] for n in images})
            for case, clean in (("train-aux", own), ("test-aux", test_aux)):
                for name, rate in realised(clean, counted, run).items():
                    rates[case].setdefault(name, []).append(rate)
            bar.update()
        log(f"  seed {seed}: ensemble train-aux {np.mean(rates['train-aux'][ENSEMBLE][-splits:]):.2%}, "
            f"test-aux {np.mean(rates['test-aux'][ENSEMBLE][-splits:]):.2%}")
    bar.close()
    summary = {case: {name: stats(v) for name, v in by_name.items()} for case, by_name in rates.items()}
    return {"fpr_asked": calibration["fpr_asked"], "threshold": calibration["threshold"], "splits": splits,
            "seeds": len(calibration["decoders"]), "pool": calibration["pool"], "victim": calibration.get("card"),
            "sizes": sizes, "summary": summary}


def stats(rates: list[float]) -> dict[str, float]:
    """Mean, sd, min, max of realised FPRs, and the share of them within the issue's 0.5-1.5% band."""
    v = np.asarray(rates, np.float64)
    return {"mean": round(float(v.mean()), 5), "sd": round(float(v.std()), 5), "min": round(float(v.min()), 5),
            "max": round(float(v.max()), 5), "in_band": round(float(((v >= 0.005) & (v <= 0.015)).mean()), 3)}


def render(res: dict[str, Any]) -> str:
    """results/calibration_shift.md from its JSON."""
    s, z = res["summary"], res["sizes"]
    lines = ["# Calibration where the auxiliary set is drawn like the corpus (issue 13, item 7)", "",
             "<!-- generated by jobs/lab_calibration_shift.py from calibration_shift.json; do not edit -->", "",
             f"- command: `{res['command']}`", f"- commit: `{res['commit']}`", f"- finished: {res['finished']}", "",
             f"The calibration measurement's score runs (victim `{res['victim']}`, clean pool `{res['pool']}`, "
             f"{z['test_rows']:,} CIFAR-10 test rows), rescored offline: {res['seeds']} decoder seeds x "
             f"{res['splits']} random halvings of the test rows. Flags are counted on one half; the threshold "
             f"(`{res['threshold']}`) comes from a hold-out of {z['holdout']:,} and a bank of {z['bank']:,} rows "
             f"that are either the decoder's own (CIFAR-10 train, the clean encoder's training images: "
             f"`train-aux`, as the product ran) or drawn from the other test half (`test-aux`: unseen like the "
             f"counted rows). Cells: mean realised FPR ± sd, [min, max], and the share of the "
             f"{res['seeds'] * res['splits']} measurements within 0.5–1.5%.", "",
             "| detector | train-aux | test-aux |", "|---|---|---|"]
    for name in s["train-aux"]:
        cells = [f"{c['mean']:.2%} ± {c['sd']:.2%} [{c['min']:.2%}, {c['max']:.2%}], in band {c['in_band']:.0%}"
                 for c in (s["train-aux"][name], s["test-aux"][name])]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"
