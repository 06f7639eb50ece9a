"""results.json of the detection measurement (merged, written atomically) and results/detection.md,
generated from results.json alone: every measured number in the markdown comes from the json.

The only numbers typed here are the paper's own (DeDe rows of its Tables 1 and 3, as quoted in
../shared/docs/DEDE.md §5), shown as labelled anchors beside the measured tables.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import BadInput
from pipeline.lab.cache import machine
from pipeline.lab.detect_data import POOLS, VALIDATION_POOLS
from pipeline.storage import write_text_atomic

RESULTS, DOCUMENT = "results.json", "detection.md"
DOWNSTREAM_BLOCKS = ("downstream", "downstream_runs")
"""An attack entry's downstream measurement, kept by a rerun that does not redo it."""
DEFAULT_KEY, DEDE_KEY, NO_DEFENCE = "ensemble", "dede", "none"
"""results keys of the product's default detector (score_corpus --detectors ensemble), DeDe, and no defence."""
OWN_KEYS = (DEFAULT_KEY, DEDE_KEY, "dede_rel", "dede_region")
"""results keys of DeDe and its variants: never counted as a baseline."""
AUC_BAR = {"badencoder": 0.98, "drupe": 0.98, "clip-backdoor": 0.98, "ctrl": 0.92, "badclip": 0.92}
TPR_BAR, FPR_BAR, ASR_BAR, CA_BAR = 0.90, 0.015, 0.05, 0.01
"""Issue 13's bar: AUC per attack at both pools; at the 1% pool TPR and clean FPR at the default
threshold; downstream ASR after filtering and CA within a point of no defence."""
DEFAULT_AUX = "id"
ORDER = ("badencoder", "drupe", "clip-backdoor", "badclip", "ctrl")
PAPER_COLUMNS = ("badencoder", "ctrl", "drupe", "clip-backdoor", "badclip")
"""The paper's column order (DEDE.md §5)."""
PAPER: dict[str, dict[str, tuple[str, ...]]] = {
    "0.5": {
        "DeDe (in-dist.)": ("93.1/6.9/0.981", "87.2/12.8/0.912", "97.6/2.4/0.997", "100/0/1.0", "85.0/14.9/0.925"),
        "DeDe OoD (STL-10)": ("97.2/2.83/0.993", "88.1/13.3/0.911", "92.1/7.9/0.976", "100/0/1.0", "72.1/27.9/0.798"),
    },
    "0.01": {
        "DeDe": ("92.0/8.3/0.978", "90.0/19.3/0.898", "98.5/3.1/0.998", "100/0/1.0", "84.0/19.4/0.903"),
        "DeDe OoD": ("96.5/8.2/0.983", "81.0/19.3/0.853", "95.5/8.3/0.979", "100/0/1.0", "88.0/19.3/0.936"),
    },
}
"""The paper's DeDe rows (TPR % / FPR % / AUC; Table 1 = pool 0.5 at the median rule, Table 3 = pool 0.01),
copied from ../shared/docs/DEDE.md §5, in PAPER_COLUMNS order."""
PAPER_TABLE = {"0.5": "Table 1 (50% triggered; the code's median rule)", "0.01": "Table 3 (1% triggered)"}
AUX_LABEL = {"id": "in-distribution (CIFAR-10 train)", "ood": "out-of-distribution (Tiny-ImageNet, 32 px)",
             "id-poisoned": "in-distribution with 1% triggered (CIFAR-10 train)"}


# ---------------------------------------------------------------------------------------------
# results.json
# ---------------------------------------------------------------------------------------------

def git_commit(root: Path | None = None) -> tuple[str | None, bool]:
    """(HEAD, whether the work tree has uncommitted changes outside results/, the measurements' own files);
    (None, False) outside git."""
    cwd = str(root or Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=cwd, capture_output=True,
                               text=True, check=True).stdout
        return head.strip(), bool(dirty.strip())
    except (OSError, subprocess.CalledProcessError):
        return None, False


def meta(argv: list[str], script: str = "jobs/lab_detect.py") -> dict[str, Any]:
    """The top-level keys of one command: commit, command, machine, finished."""
    commit, dirty = git_commit()
    return {"commit": commit, "dirty": dirty, "command": shlex.join([script, *argv]),
            "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_generated(folder: Path, stem: str, res: dict[str, Any] | None, render: Callable[[dict[str, Any]], str],
                    script: str) -> None:
    """FOLDER/STEM.json from `res` (None: the one already there, for `--render`) and FOLDER/STEM.md rendered from
    it; BadInput naming `script` when there is neither."""
    path = folder / f"{stem}.json"
    if res is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(str(path), json.dumps(res, indent=2) + "\n")
    elif not path.exists():
        raise BadInput(f"{path} not found: run {script} without --render first")
    write_text_atomic(str(folder / f"{stem}.md"), render(json.loads(path.read_text())))
    print(f"wrote {path} and {folder / f'{stem}.md'}")


def load(folder: Path) -> dict[str, Any]:
    """The results.json in `folder`, or {} when there is none."""
    path = folder / RESULTS
    return json.loads(path.read_text()) if path.exists() else {}


def with_default_pools(detection: dict[str, Any]) -> dict[str, Any]:
    """The detection block with the default auxiliary set's pools also at top level (`detection["0.5"]`)."""
    out = {k: v for k, v in detection.items() if k not in POOLS}
    if DEFAULT_AUX in out:
        out.update({p: out[DEFAULT_AUX][p] for p in POOLS if p in out[DEFAULT_AUX]})
    return out


def _same_measurement(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return ("skipped" not in old and "skipped" not in new and old.get("weights_sha256") == new.get("weights_sha256")
            and old.get("settings") == new.get("settings"))


def merge(old: dict[str, Any], attacks: dict[str, dict[str, Any]], top: dict[str, Any],
          calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """The old results with these attacks' entries replaced (an entry of the same victim and settings keeps
    the auxiliary sets and pools this command did not measure), `calibration` replaced when given, `top` (commit,
    command, machine, finished) updated; other top-level keys are kept as they were."""
    out = dict(old)
    merged = dict(old.get("attacks", {}))
    for name, entry in attacks.items():
        entry = {**entry, "command": top.get("command"), "commit": top.get("commit"), "finished": top.get("finished")}
        prev = merged.get(name)
        if "skipped" not in entry:
            if prev is not None and _same_measurement(prev, entry):
                for block in ("detection", "runs"):          # per auxiliary set, per pool
                    old_b = {k: v for k, v in prev.get(block, {}).items() if k not in POOLS}
                    new_b = {k: v for k, v in entry.get(block, {}).items() if k not in POOLS}
                    entry[block] = {aux: {**old_b.get(aux, {}), **new_b.get(aux, {})} for aux in {**old_b, **new_b}}
                entry["decoders"] = {**prev.get("decoders", {}), **entry.get("decoders", {})}
                for block in DOWNSTREAM_BLOCKS:
                    if block not in entry and block in prev:
                        entry[block] = prev[block]
            entry["detection"] = with_default_pools(entry.get("detection", {}))
        merged[name] = entry
    out["attacks"] = {k: merged[k] for k in sorted(merged, key=lambda a: (ORDER.index(a) if a in ORDER else 99, a))}
    if calibration is not None:
        out["calibration"] = {**calibration, "command": top.get("command"), "commit": top.get("commit"),
                              "finished": top.get("finished")}
    out.update(top)
    return out


def merge_ablation(old: dict[str, Any], name: str, attacks: dict[str, dict[str, Any]], top: dict[str, Any],
                   settings: dict[str, Any]) -> dict[str, Any]:
    """The old results with ablation `name` (one arm of a DeDe change, issue 13 item 6) holding these attacks'
    entries, merged into an earlier measurement of the same arm and victims as `merge` does; the main table
    and every other key stay as they were."""
    out = dict(old)
    ablations = dict(old.get("ablations", {}))
    prev = ablations.get(name, {})
    arm = merge({"attacks": prev.get("attacks", {})} if prev.get("settings") == settings else {}, attacks, top)
    ablations[name] = {"attacks": arm["attacks"], "settings": settings, "command": top.get("command"),
                       "commit": top.get("commit"), "finished": top.get("finished")}
    out["ablations"] = ablations
    return out


def write(folder: Path, results: dict[str, Any]) -> None:
    """results.json and detection.md in `folder`, both atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(str(folder / RESULTS), json.dumps(results, indent=2) + "\n")
    write_text_atomic(str(folder / DOCUMENT), render(results))


def rerender(folder: Path) -> Path:
    """Regenerate detection.md from the results.json in `folder`."""
    path = folder / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"no {path} to render (run jobs/lab_detect.py first)")
    write_text_atomic(str(folder / DOCUMENT), render(json.loads(path.read_text())))
    return folder / DOCUMENT


# ---------------------------------------------------------------------------------------------
# detection.md
# ---------------------------------------------------------------------------------------------

def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _auc_tpr_fpr(m: dict[str, Any]) -> str:
    return f"{_num(m.get('auc'))} / {_pct(m.get('tpr'))} / {_pct(m.get('fpr'))}"


def cell(m: dict[str, Any] | None, median: bool) -> str:
    """`AUC / TPR / FPR` at the default threshold, the oracle TPR at 1% FPR, and (0.5 pool) the median rule."""
    if not m:
        return "-"
    if "error" in m:
        return f"error: {m['error']}"
    out = f"{_auc_tpr_fpr(m)} · @1%: {_pct(m.get('tpr_at_1pct_fpr'))}"
    if median:
        out += f" · med {_pct(m.get('tpr_median'))} / {_pct(m.get('fpr_median'))}"
    return out


def _measured(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a: e for a, e in results.get("attacks", {}).items() if "skipped" not in e}


def _aux_sets(attacks: dict[str, dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for e in attacks.values():
        for k in e.get("detection", {}):
            if k not in POOLS:
                seen.setdefault(k, None)
    return sorted(seen, key=lambda k: (list(AUX_LABEL).index(k) if k in AUX_LABEL else 99, k))


def _detectors(attacks: dict[str, dict[str, Any]], aux: str, pool: str) -> list[str]:
    seen: dict[str, None] = {"dede": None}
    for e in attacks.values():
        for k in e.get("detection", {}).get(aux, {}).get(pool, {}):
            seen.setdefault(k, None)
    return list(seen)


def _pool_counts(attacks: dict[str, dict[str, Any]], pool: str) -> str:
    counts = {(r["clean"], r["poisoned"]) for e in attacks.values() for runs in e.get("runs", {}).values()
              for p, r in runs.items() if p == pool}
    return ", ".join(f"{c:,} clean + {p:,} triggered" for c, p in sorted(counts)) or "-"


def _victims(results: dict[str, Any]) -> list[str]:
    lines = ["## Victims", "",
             "| attack | victim (cache entry) | target | CA | ASR | decoders (aux: preset, epochs, train / hold-out, minutes) "
             "| bank trim | samples scored | errors |", "|---|---|---|---|---|---|---|---|---|"]
    others = []
    for attack, e in results.get("attacks", {}).items():
        if e.get("command") and e.get("command") != results.get("command"):
            others.append(f"- {attack}: `{e['command']}` (commit `{e.get('commit')}`, {e.get('finished')})")
        if "skipped" in e:
            lines.append(f"| {attack} | skipped: {e['skipped']} | | | | | | | |")
            continue
        decs = "; ".join(f"{aux}: {d.get('preset')}, {d.get('epochs')} ep, {d.get('n_train')} / {d.get('n_holdout')}, "
                         f"{d.get('minutes')} min" for aux, d in e.get("decoders", {}).items())
        runs = [r for runs in e.get("runs", {}).values() for r in runs.values()]
        lines.append(f"| {attack} | `{e.get('card') or e.get('victim')}` | {e.get('target')} | {_pct(e.get('clean_accuracy'))} "
                     f"| {_pct(e.get('attack_success_rate'))}{' (**not implanted**)' if e.get('implanted') is False else ''} "
                     f"| {decs} | {e.get('settings', {}).get('bank_trim', 0)} "
                     f"| {sum(r.get('samples', 0) for r in runs):,} "
                     f"| {sum(r.get('errors', 0) for r in runs)} |")
    if others:
        lines += ["", "Attacks measured by an earlier command:", *others]
    return lines


def _paper(pool: str) -> list[str]:
    rows = PAPER[pool]
    lines = [f"Paper anchors, DeDe rows of the paper's {PAPER_TABLE[pool]} as quoted in DEDE.md §5 "
             "(the **paper's** numbers, not ours; format TPR % / FPR % / AUC):", "",
             "| paper row | " + " | ".join(PAPER_COLUMNS) + " |", "|---|" + "---|" * len(PAPER_COLUMNS)]
    lines += [f"| {name} (paper) | " + " | ".join(values) + " |" for name, values in rows.items()]
    return lines


def _pool_section(results: dict[str, Any], pool: str) -> list[str]:
    attacks = _measured(results)
    median = pool == "0.5"
    title = {"0.5": "balanced, paper Table 1's setting", "0.01": "1% triggered, paper Table 3's setting"}[pool]
    lines = [f"## Pool {pool} ({title}): {_pool_counts(attacks, pool)} CIFAR-10 test images", "",
             "Cells: AUC / TPR / FPR at the detector's default threshold (the run's threshold policy, calibrated on "
             "the decoder's clean hold-out) · @1%: oracle TPR at 1% FPR"
             + (" · med: TPR / FPR at the pooled median (paper Table 1's rule)" if median else "") + ".", ""]
    for aux in _aux_sets(attacks):
        cols = [a for a, e in attacks.items() if pool in e.get("detection", {}).get(aux, {})]
        if not cols:
            continue
        lines += [f"### Auxiliary set `{aux}`: {AUX_LABEL.get(aux, aux)}", "",
                  "| detector | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for det in _detectors(attacks, aux, pool):
            lines.append(f"| {det} | " + " | ".join(cell(attacks[a]["detection"][aux][pool].get(det), median)
                                                   for a in cols) + " |")
        lines.append("")
    return lines + _paper(pool) + [""]


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def _targets(results: dict[str, Any]) -> list[str]:
    attacks = _measured(results)
    lines = ["## Targets (issue 13): the product's default detector (`ensemble`) with the default auxiliary set "
             f"(`{DEFAULT_AUX}`)", "",
             "| attack | AUC 0.5 / 0.01 (bar) | TPR / FPR at 1% pool (bar 90% / 1.5%) | best baseline AUC at 0.01 "
             "| default >= every baseline | downstream CA / ASR: none -> default (bar ASR 5%, CA -1 pt) |",
             "|---|---|---|---|---|---|"]
    for a, e in attacks.items():
        det = e.get("detection", {}).get(DEFAULT_AUX, {})
        d50, d01 = det.get("0.5", {}).get(DEFAULT_KEY, {}), det.get("0.01", {}).get(DEFAULT_KEY, {})
        bar = AUC_BAR.get(a)
        aucs = [d50.get("auc"), d01.get("auc")]
        auc_ok = None if bar is None or None in aucs else all(v >= bar for v in aucs)
        tpr, fpr = d01.get("tpr"), d01.get("fpr")
        rate_ok = None if tpr is None or fpr is None else tpr >= TPR_BAR and fpr <= FPR_BAR
        base = {k: m.get("auc") for k, m in det.get("0.01", {}).items()
                if k not in OWN_KEYS and m.get("auc") is not None}
        best = max(base, key=base.get) if base else None
        beats = None if best is None or d01.get("auc") is None else d01["auc"] >= base[best]
        down = e.get("downstream", {})
        none, dflt = down.get(NO_DEFENCE), down.get(DEFAULT_KEY)
        if none and dflt:
            down_ok = (dflt["attack_success_rate"] <= ASR_BAR
                       and none["clean_accuracy"] - dflt["clean_accuracy"] <= CA_BAR + 1e-9)
            down_cell = (f"{_pct(none['clean_accuracy'])} / {_pct(none['attack_success_rate'])} -> "
                         f"{_pct(dflt['clean_accuracy'])} / {_pct(dflt['attack_success_rate'])}: {_mark(down_ok)}")
        else:
            down_cell = "-"
        lines.append(f"| {a} | {_num(aucs[0])} / {_num(aucs[1])} ({_num(bar, '.2f')}): {_mark(auc_ok)} "
                     f"| {_pct(tpr)} / {_pct(fpr)}: {_mark(rate_ok)} "
                     f"| {best or '-'} {_num(base.get(best) if best else None)} | {_mark(beats)} | {down_cell} |")
    return lines + [""]


def _validation(results: dict[str, Any]) -> list[str]:
    """The default and DeDe on the validation pools beside the test pools (empty when none was scored)."""
    attacks = {a: e for a, e in _measured(results).items()
               if any(p in e.get("detection", {}).get(DEFAULT_AUX, {}) for p in VALIDATION_POOLS)}
    if not attacks:
        return []
    lines = ["## Validation pools: the split defaults are chosen on", "",
             "The same two mixes drawn from CIFAR-10 *train* images that no decoder reads (`--pools val-0.5 val-0.01`, "
             f"auxiliary set `{DEFAULT_AUX}`); `jobs/lab_fusion.py` ranks the ensemble's member sets on these "
             "(results/fusion.md), never on the test pools above. Cells: AUC / TPR / FPR at the default threshold.", "",
             "| attack | detector | val-0.5 | val-0.01 | test 0.5 | test 0.01 |", "|---|---|---|---|---|---|"]
    for a, e in attacks.items():
        det = e["detection"][DEFAULT_AUX]
        for key in (DEFAULT_KEY, DEDE_KEY):
            cells = [_auc_tpr_fpr(det[p][key]) if det.get(p, {}).get(key) else "-" for p in (*VALIDATION_POOLS, *POOLS)]
            lines.append(f"| {a} | {key} | " + " | ".join(cells) + " |")
    return lines + [""]


def _downstream(results: dict[str, Any]) -> list[str]:
    attacks = {a: e for a, e in _measured(results).items() if e.get("downstream")}
    lines = ["## Downstream: a classifier on the victim's features, with and without filtering (paper Table 2's "
             "protocol)", ""]
    if not attacks:
        return lines + ["Not measured yet (`jobs/lab_detect.py --pools downstream`).", ""]
    lines += ["An L2 linear probe on each victim's features, trained on CIFAR-10 train with 1% of it triggered and "
              "relabelled to the target; tested on every CIFAR-10 test image and a triggered copy of each one of "
              "another class. A detector, at its default threshold, removes what it flags from the training set and "
              "rejects what it flags at test time (a rejected triggered image is a failed attack, a rejected clean "
              "one a wrong answer). Cells: CA / ASR; `none` is no defence.", ""]
    for a, e in attacks.items():
        r = e.get("downstream_runs", {})
        lines.append(f"- {a}: decoder of aux `{r.get('aux')}`; {r.get('train', 0):,} training rows "
                     f"({r.get('train_poisoned', 0):,} triggered), {r.get('test_clean', 0):,} clean and "
                     f"{r.get('test_triggered', 0):,} triggered test images")
    cols = list(attacks)
    seen: dict[str, None] = {NO_DEFENCE: None, DEDE_KEY: None, DEFAULT_KEY: None}
    for e in attacks.values():
        for k in e["downstream"]:
            seen.setdefault(k, None)
    lines += ["", "| detector | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for det in seen:
        cells = []
        for a in cols:
            m = attacks[a]["downstream"].get(det)
            cells.append("-" if not m else f"{_pct(m.get('clean_accuracy'))} / {_pct(m.get('attack_success_rate'))}")
        lines.append(f"| {det} | " + " | ".join(cells) + " |")
    return lines + [""]


def _calibration(results: dict[str, Any]) -> list[str]:
    lines = ["## Calibration: the FPR asked for against the FPR realised on clean data", ""]
    cal = results.get("calibration")
    if cal:
        vals = [v for v in cal.get("fpr_realised", []) if v is not None]
        mean = sum(vals) / len(vals) if vals else None
        lines += [f"Victim `{cal.get('card') or cal.get('victim')}`, auxiliary set `{cal.get('aux')}`, threshold "
                  f"`{cal.get('threshold')}`, {cal.get('samples')} clean CIFAR-10 test images, {cal.get('errors')} errors, "
                  f"decoder seeds {cal.get('seeds')}; command `{cal.get('command', '')}`.", "",
                  f"- asked: {_pct(cal.get('fpr_asked'))}; realised (DeDe, per seed): "
                  + ", ".join(_pct(v) for v in cal.get("fpr_realised", [])) + f"; mean {_pct(mean)}", ""]
        dets = cal.get("detectors", {})
        if len(dets) > 1:
            lines += ["| detector | " + " | ".join(f"seed {s}" for s in cal.get("seeds", [])) + " |",
                      "|---|" + "---|" * len(cal.get("seeds", []))]
            lines += [f"| {d} | " + " | ".join(_pct(v) for v in vs) + " |" for d, vs in dets.items()]
            lines.append("")
    else:
        lines += ["Not measured yet (`jobs/lab_detect.py --calibration-seeds 5`).", ""]
    attacks = _measured(results)
    heads = [(aux, p) for aux in _aux_sets(attacks) for p in POOLS]
    if attacks and heads:
        lines += ["Realised FPR of DeDe on the clean rows of every pool above (asked: the run's threshold policy):", "",
                  "| attack | " + " | ".join(f"{aux} / {p}" for aux, p in heads) + " |", "|---|" + "---|" * len(heads)]
        for a, e in attacks.items():
            det = e.get("detection", {})
            lines.append(f"| {a} | " + " | ".join(_pct(det.get(aux, {}).get(p, {}).get("dede", {}).get("fpr"))
                                                  for aux, p in heads) + " |")
        lines.append("")
    return lines


ABLATION_DETECTORS = (DEDE_KEY, DEFAULT_KEY)


def _ablations(results: dict[str, Any]) -> list[str]:
    """Per auxiliary set and pool, DeDe and the ensemble under each ablation arm, side by side."""
    arms = results.get("ablations", {})
    if not arms:
        return []
    lines = ["## Ablations (issue 13 item 6): one change to DeDe at a time, every arm on the same victims", "",
             "Each arm is one command (below); the victims are this section's own (the cache entries named), "
             "which may be other weights than the main table's. Cells: AUC / TPR / FPR at the default threshold.", ""]
    for name, arm in arms.items():
        victims = ", ".join(f"{a} `{e.get('card')}` ({(e.get('weights_sha256') or '')[:8]})"
                            for a, e in arm["attacks"].items() if "skipped" not in e)
        lines.append(f"- `{name}`: `{arm.get('command')}` (commit `{arm.get('commit')}`); victims: {victims}")
    lines.append("")
    cells: dict[tuple[str, str], dict[tuple[str, str], dict[str, dict[str, Any]]]] = {}
    for name, arm in arms.items():
        for attack, e in _measured(arm).items():
            for aux, pools in e.get("detection", {}).items():
                if aux in POOLS:
                    continue
                for pool, dets in pools.items():
                    for det in ABLATION_DETECTORS:
                        cells.setdefault((aux, pool), {}).setdefault((name, det), {})[attack] = dets.get(det, {})
    for (aux, pool), rows in cells.items():
        cols = [a for a in ORDER if any(a in r for r in rows.values())]
        lines += [f"### Auxiliary set `{aux}`, pool {pool}", "", "| arm | detector | " + " | ".join(cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for (name, det), by_attack in rows.items():
            lines.append(f"| `{name}` | {det} | " + " | ".join(
                _auc_tpr_fpr(by_attack[a]) if by_attack.get(a) else "-" for a in cols) + " |")
        lines.append("")
    return lines


def render(results: dict[str, Any]) -> str:
    """detection.md from results.json (nothing else but the labelled paper anchors)."""
    commit = results.get("commit") or "unknown"
    lines = ["# Detection on the lab's backdoored encoders", "",
             "<!-- generated by jobs/lab_detect.py from results.json; do not edit (rerender: jobs/lab_detect.py --render) -->",
             "", f"- command: `{results.get('command', '')}`",
             f"- commit: `{commit}`" + (" (with uncommitted changes)" if results.get("dirty") else ""),
             f"- machine: {results.get('machine', '')}", f"- finished: {results.get('finished', '')}", ""]
    lines += _victims(results) + [""]
    lines += _targets(results)
    lines += _validation(results)
    for pool in POOLS:
        lines += _pool_section(results, pool)
    lines += _downstream(results)
    lines += _calibration(results)
    lines += _ablations(results)
    return "\n".join(lines).rstrip() + "\n"
