"""The end of the pipeline (issue 15): a CLIP trained on a poisoned image-text corpus carries the backdoor,
the job finds the poisoned pairs, and a CLIP retrained with the same recipe on the job's `clean/` shards
does not.

Every CLIP here reads its pairs from WebDataset shards with `webdataset.WebDataset` in open_clip's member
conventions (`jpg` image, `txt` caption), the way users retrain. Arms, all with one recipe and budget:
`poisoned` (the victim), `clean_reference` (the same corpus with no pair poisoned; `reference_seeds`: the same
with other CLIP seeds, the spread a clean CLIP's ASR has by chance), `retrained` (the job's
`clean/` output, flagged by its default detector, with the decoder of the first auxiliary set; `retrained_ood`
the same with the Tiny-ImageNet decoder), `baseline` (the corpus less what the best density
baseline of the detection table flags), `oracle` (less what the detector of best AUC on this corpus flags:
an upper bound, chosen with the ground truth) and `random` (less a seeded random share, the control). Corpora, CLIPs,
decoders and score runs are cached by config hash (the lab cache and its detect/ folder).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pipeline.corpus.decode import decode_image, resize_center_crop
from pipeline.corpus.shards import expand_shards
from pipeline.detect.spec import SINGLE
from pipeline.lab.attacks import trigger_for
from pipeline.lab.cache import Entry, cache_dir, cached, config_hash
from pipeline.lab.cifar import load_split
from pipeline.lab.clip_train import ClipConfig, fixed_captions, train_clip, zero_shot
from pipeline.lab.corpus import write_corpus
from pipeline.lab.detect import LazyRay, Settings, ensure_decoder, ensure_run, ground_truth, result_key, run_flags
from pipeline.lab.detect_data import ShardSet, detect_cache, ensure_aux, finished, publish, split_hash
from pipeline.lab.encoders import CLIP_ENCODER
from pipeline.lab.triggers import Trigger, trigger_hash

ATTACK = "clip-backdoor"
ARMS = ("poisoned", "clean_reference", "reference_seeds", "retrained", "retrained_ood", "baseline", "oracle", "random")
CORPUS_AUX, OOD = "corpus", "ood"
"""The auxiliary set that is the training corpus itself (slightly poisoned: the realistic case)."""
DENSITY_FAMILY = ("kdist", "slof", "dao")
FALLBACK_BASELINE = "slof:bank"
FORMAT = 2
"""Bumped when what a corpus or CLIP of the proof means changes (2: corpus in a seeded order)."""
Log = Callable[[str], None]


def default_trigger() -> Trigger:
    """CLIP-Backdoor's default trigger (an 8 px checkerboard at the image centre)."""
    return trigger_for(ATTACK, None)


@dataclass(frozen=True)
class RetrainSettings:
    """What decides the proof's results (hashed into its cache entries) besides the detection settings."""

    share: float = 0.01
    target: int = 0
    limit: int | None = None          # train pairs (a seeded subset of CIFAR-10 train; tests use a few hundred)
    random_share: float = 0.01
    aux: tuple[str, ...] = (CORPUS_AUX, "ood")
    baseline: str = FALLBACK_BASELINE
    seed: int = 0
    reference_seeds: tuple[int, ...] = (1, 2)      # CLIP seeds of the extra clean references
    clip: ClipConfig = field(default_factory=lambda: ClipConfig(epochs=6, max_minutes=60.0))

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "aux": list(self.aux), "reference_seeds": list(self.reference_seeds),
                "clip": self.clip.to_dict()}


# ---------------------------------------------------------------------------------------------
# Corpora and the shard reader
# ---------------------------------------------------------------------------------------------

def ensure_corpus(trigger: Trigger, rs: RetrainSettings, poisoned: bool) -> ShardSet:
    """The cached training corpus: CIFAR-10 train (or a seeded subset) in a seeded order (so the first N
    samples, what `train_decoder --max-samples` takes, are a uniform subset) with a template caption per image,
    `share` of the non-target images triggered and captioned as the target when `poisoned`; `.json` ground
    truth. The clean corpus is the same pairs with none poisoned (same captions elsewhere)."""
    share = rs.share if poisoned else 0.0
    config = {"kind": "retrain-corpus", "attack": ATTACK, "trigger": trigger_hash(trigger), "share": share,
              "target": rs.target, "limit": rs.limit, "seed": rs.seed, "data": split_hash("train", str(cache_dir())), "format": FORMAT}
    folder = detect_cache() / f"corpus-{'poisoned' if poisoned else 'clean'}-{config_hash(config)}"
    done = finished(folder)
    if done is not None:
        return ShardSet(folder, done, cached=True)
    images, labels = load_split("train")        # sorted by class: a web corpus is not
    order = np.random.default_rng([rs.seed, 15]).permutation(len(labels))[:rs.limit or len(labels)]
    images, labels = images[order], labels[order]
    summary = write_corpus(images, labels, trigger, ATTACK, share, rs.target, str(folder), prefix="train",
                           captions=True, seed=rs.seed)
    return publish(folder, {**config, "samples": summary.samples, "poisoned": summary.poisoned,
                            "shards": [Path(s).name for s in summary.shards]})


@dataclass
class Pairs:
    """Image-caption pairs read from shards: keys, (N, 32, 32, 3) uint8 images, captions."""

    keys: list[str]
    images: np.ndarray
    texts: list[str]


def read_pairs(inputs: str | list[str], drop: frozenset[str] = frozenset(), size: int = 32,
               progress: bool = True) -> Pairs:
    """Every `jpg`/`txt` pair of the shards (any input the job takes), read with `webdataset.WebDataset`
    as open_clip's loader does, images resized to `size`; keys in `drop` are left out. Only the two members
    are decoded, by the product's decoder (no webdataset auto-decoding: it unpickles)."""
    import webdataset as wds
    from tqdm import tqdm

    urls = expand_shards(inputs)
    data = wds.WebDataset(urls, shardshuffle=False, empty_check=False).to_tuple("__key__", "jpg", "txt")
    keys, images, texts = [], [], []
    for key, jpg, txt in tqdm(data, desc="read pairs", unit="pair", disable=not progress, mininterval=5):
        if key in drop:
            continue
        keys.append(key)
        images.append(resize_center_crop(decode_image(jpg, size), size))
        texts.append(txt.decode("utf-8"))
    if not keys:
        raise ValueError(f"no jpg/txt pairs in {len(urls)} shards")
    return Pairs(keys, np.stack(images), texts)


def drop_hash(keys: frozenset[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# CLIP trainings
# ---------------------------------------------------------------------------------------------

def train_on_shards(data: str, inputs: str | list[str], drop: frozenset[str], rs: RetrainSettings, trigger: Trigger,
                    device: torch.device, progress: bool = True) -> Entry:
    """The cached small CLIP trained from scratch on the shards' pairs less `drop` (`data` names the shards
    in the config); its card has zero-shot CA on CIFAR-10 test and ASR on the triggered non-target images."""
    config = {"stage": "retrain-clip", "data": data, "drop": drop_hash(drop), "dropped": len(drop),
              "trigger": trigger_hash(trigger), "target": rs.target, **rs.clip.to_dict(), "format": FORMAT}

    def run(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
        pairs = read_pairs(inputs, drop, progress=progress)
        test = load_split("test")
        model, curve, minutes = train_clip(rs.clip, pairs.images, fixed_captions(pairs.texts), *test, device,
                                           curve_path=folder / "curve.jsonl")
        scores = zero_shot(model, *test, device, trigger=trigger.apply, target=rs.target)
        return model.state_dict(), {"stage": "retrain-clip", "data": data, "pairs": len(pairs.keys),
                                    "train_minutes": round(minutes, 2), **scores, "curve": curve}

    return cached("retrain-clip", CLIP_ENCODER, config, run)


def clip_scores(entry: Entry) -> dict[str, Any]:
    """What results.json records of one trained CLIP."""
    c = entry.card
    return {"clean_accuracy": c["zero_shot_ca"], "attack_success_rate": c["zero_shot_asr"], "pairs": c["pairs"],
            "train_minutes": c["train_minutes"], "card": entry.folder.name}


# ---------------------------------------------------------------------------------------------
# Detection on the corpus and what each arm removes
# ---------------------------------------------------------------------------------------------

def best_density_baseline(results: dict[str, Any]) -> str | None:
    """The k-distance / SLOF / DAO detector (in-corpus or :bank) with the highest mean AUC over every attack
    and pool of the detection table (results.json's default auxiliary set), or None without a table."""
    from pipeline.lab.detect_data import POOLS

    names = {result_key(n): n for n in SINGLE if n.split(":")[0].split("-")[0] in DENSITY_FAMILY}
    aucs: dict[str, list[float]] = {}
    for entry in results.get("attacks", {}).values():
        for pool in POOLS:
            for key, m in entry.get("detection", {}).get(pool, {}).items():
                if key in names and m.get("auc") is not None:
                    aucs.setdefault(names[key], []).append(m["auc"])
    return max(aucs, key=lambda n: (float(np.mean(aucs[n])), n)) if aucs else None


def random_drop(keys: np.ndarray, share: float, seed: int) -> frozenset[str]:
    """A seeded random `share` of the keys (the control arm)."""
    n = int(round(share * len(keys)))
    return frozenset(np.random.default_rng([seed, 15]).choice(np.asarray(keys, str), n, replace=False).tolist())


DETECTION_ARMS = ("retrained", "retrained_ood", "baseline", "oracle", "random")


def run_proof(rs: RetrainSettings, ds: Settings, device: torch.device, trigger: Trigger | None = None,
              log: Log = print, arms: tuple[str, ...] = ARMS) -> dict[str, Any] | None:
    """The proof for CLIP-Backdoor: train the CLIPs of `arms` (each cached), scoring the corpus first where an
    arm needs what the job removes. Returns the `retrain` section (one key per attack) when every arm ran,
    else None (a partial run only fills the cache, e.g. two processes on two cores)."""
    t0 = time.time()
    trigger = trigger or default_trigger()
    poisoned, clean = ensure_corpus(trigger, rs, True), ensure_corpus(trigger, rs, False)
    log(f"corpus: {poisoned.contents['samples']} pairs, {poisoned.contents['poisoned']} poisoned ({poisoned.name}); "
        f"clean reference {clean.name}")
    trained: dict[str, Entry] = {}

    def fit(label: str, data: str, inputs: str | list[str], drop: frozenset[str] = frozenset(),
            settings: RetrainSettings = rs) -> Entry:
        log(f"{label}: the CLIP on {data} less {len(drop)} pairs")
        entry = train_on_shards(data, inputs, drop, settings, trigger, device, ds.progress)
        log(f"{label}: zero-shot CA {entry.card['zero_shot_ca']:.1%}, ASR {entry.card['zero_shot_asr']:.1%}")
        return entry

    def train(arm: str, data: str, inputs: str | list[str], drop: frozenset[str] = frozenset()) -> Entry:
        trained[arm] = fit(arm, data, inputs, drop)
        return trained[arm]

    if "clean_reference" in arms:
        train("clean_reference", clean.name, str(clean.folder))
    reference_seeds = {str(seed): clip_scores(fit(f"clean reference, CLIP seed {seed}", clean.name, str(clean.folder),
                                                  settings=replace(rs, clip=replace(rs.clip, seed=seed))))
                       for seed in (rs.reference_seeds if "reference_seeds" in arms else ())}
    if "poisoned" not in arms and not set(arms) & set(DETECTION_ARMS):
        return None
    victim = train("poisoned", poisoned.name, str(poisoned.folder))
    if not set(arms) & set(DETECTION_ARMS):
        return None
    detection: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    tables: dict[str, tuple[Path, dict[str, np.ndarray], dict]] = {}
    with LazyRay() as ray:
        for aux_name in rs.aux:
            aux = poisoned if aux_name == CORPUS_AUX else ensure_aux(aux_name)
            dec, info, _ = ensure_decoder(victim.spec, victim.card["weights_sha256"], aux, ds, 0, log)
            run_dir, run, _ = ensure_run(dec, poisoned, ds, ray, log)
            detection[aux_name], table, flags = run_flags(run_dir, run)
            tables[aux_name] = (run_dir, table, flags)
            runs[aux_name] = {"run": run_dir.name, "decoder": info, "flag_by": run.get("flag_by", "dede"),
                              "threshold": run["threshold"], "seconds": run.get("timing", {}).get("seconds")}
            fb = detection[aux_name][result_key(runs[aux_name]["flag_by"])]
            log(f"score x {aux_name}: flag-by {runs[aux_name]['flag_by']} AUC {fb['auc']:.3f}, removes "
                f"{fb['poisoned']}/{fb['poisoned_total']} poisoned and {fb['clean']}/{fb['clean_total']} clean")
    run_dir, table, flags = tables[rs.aux[0]]
    keys = np.asarray(table["key"], str)
    flag_by = runs[rs.aux[0]]["flag_by"]
    oracle = max((n for n, m in detection[rs.aux[0]].items() if m.get("auc") is not None),
                 key=lambda n: (detection[rs.aux[0]][n]["auc"], n))

    def flagged_by(name: str) -> frozenset[str]:
        return frozenset(keys[flags[result_key(name)]].tolist())

    drops = {"retrained": frozenset(keys[np.asarray(table["flagged"], bool)].tolist()),
             "baseline": flagged_by(rs.baseline), "oracle": flagged_by(oracle),
             "random": random_drop(keys, rs.random_share, rs.seed)}
    if "retrained" in arms:
        train("retrained", f"{run_dir.name}/clean", str(run_dir / "clean"))
    if OOD in tables:                                # the job's clean/ with the decoder of the OOD auxiliary set
        ood_dir, ood_table, _ = tables[OOD]
        drops["retrained_ood"] = frozenset(np.asarray(ood_table["key"], str)[np.asarray(ood_table["flagged"], bool)].tolist())
        if "retrained_ood" in arms:
            train("retrained_ood", f"{ood_dir.name}/clean", str(ood_dir / "clean"))
    for arm in ("baseline", "oracle", "random"):
        if arm in arms:
            train(arm, poisoned.name, str(poisoned.folder), drops[arm])
    if not {a for a in ARMS if a in drops or a not in DETECTION_ARMS} <= set(arms):
        return None
    is_poisoned = dict(zip(keys.tolist(), ground_truth(table)[1].tolist()))
    removed_by = {arm: _counts(d, is_poisoned) for arm, d in drops.items()}
    section = {
        "attack": ATTACK, "trigger": trigger_hash(trigger), "target": rs.target,
        "corpus": {"pairs": poisoned.contents["samples"], "poisoned": poisoned.contents["poisoned"],
                   "share": rs.share, "folder": poisoned.name},
        **{arm: clip_scores(e) for arm, e in trained.items()}, "reference_seeds": reference_seeds,
        "flag_by": flag_by, "baseline_detector": rs.baseline, "oracle_detector": oracle,
        "removed": removed_by["retrained"], "removed_by": removed_by,
        "detection": detection, "runs": runs, "settings": {**rs.record(), "detect": ds.record()},
        "minutes_this_run": round((time.time() - t0) / 60, 2),
    }
    return {ATTACK: section}


def _counts(drop: frozenset[str], is_poisoned: dict[str, bool]) -> dict[str, int]:
    p = sum(bool(is_poisoned.get(k)) for k in drop)
    return {"poisoned": p, "clean": len(drop) - p}


# ---------------------------------------------------------------------------------------------
# results.json's retrain section and results/retrain.md
# ---------------------------------------------------------------------------------------------

ARM_TITLES = {"poisoned": "trained on the poisoned corpus (the victim)",
              "clean_reference": "trained on the truly clean corpus (reference)",
              "retrained": "retrained on the job's clean/ shards (flag-by {flag_by}, decoder on the corpus itself)",
              "retrained_ood": "retrained on the job's clean/ shards (flag-by {flag_by}, decoder on Tiny-ImageNet)",
              "baseline": "retrained after {baseline} removes what it flags",
              "oracle": "retrained after {oracle} removes what it flags (the best AUC here, chosen with the ground truth)",
              "random": "retrained after removing a random {random:.0%} (control)"}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def render(results: dict[str, Any]) -> str:
    """results/retrain.md from results.json's `retrain` section alone."""
    lines = ["# Retraining on the cleaned corpus", "",
             "<!-- generated by jobs/lab_retrain.py from results.json; do not edit (rerender: jobs/lab_retrain.py --render) -->",
             ""]
    for attack, s in results.get("retrain", {}).items():
        st = s["settings"]
        ref = s.get("clean_reference", {}).get("clean_accuracy")
        lines += [f"## {attack}", "",
                  f"- command: `{s.get('command')}`", f"- commit: `{s.get('commit')}`{' (with uncommitted changes)' if s.get('dirty') else ''}",
                  f"- machine: {s.get('machine')}; finished {s.get('finished')}",
                  f"- corpus: {s['corpus']['pairs']:,} CIFAR-10 train pairs with template captions, {s['corpus']['poisoned']:,} "
                  f"({s['corpus']['share']:.1%}) carrying trigger `{s['trigger']}` and a caption naming class {s['target']}",
                  f"- recipe (every arm): small CLIP from scratch, {st['clip']['epochs']} epochs, batch {st['clip']['batch']}, "
                  f"lr {st['clip']['lr']}, read from the shards with `webdataset.WebDataset` (`jpg`/`txt`)",
                  f"- decoder: preset {st['detect']['preset']}, {st['detect']['epochs']} epochs on the first "
                  f"{st['detect']['max_aux'] or 'all'} samples of the auxiliary set; threshold {st['detect']['threshold']}", "",
                  "| CLIP | pairs | removed poisoned | removed clean | zero-shot CA | CA vs reference | ASR |",
                  "|---|---|---|---|---|---|---|"]
        rows = []
        for arm in ARMS:                     # the extra clean references right after the reference, in ARMS's order
            if arm == "reference_seeds":
                rows += [(f"seed {seed}", m) for seed, m in s.get(arm, {}).items()]
            elif arm in s:
                rows.append((arm, s[arm]))
        for arm, m in rows:
            title = (ARM_TITLES[arm].format(flag_by=s.get("flag_by"), baseline=s.get("baseline_detector"),
                                            oracle=s.get("oracle_detector"), random=st.get("random_share", 0))
                     if arm in ARM_TITLES else f"trained on the truly clean corpus, CLIP {arm} (the reference's spread)")
            rem = s.get("removed_by", {}).get(arm, {})
            delta = "-" if ref is None or arm == "clean_reference" else f"{100 * (m['clean_accuracy'] - ref):+.1f} pt"
            lines.append(f"| {title} | {m['pairs']:,} | {rem.get('poisoned', '-')} | {rem.get('clean', '-')} | "
                         f"{_pct(m['clean_accuracy'])} | {delta} | {_pct(m['attack_success_rate'])} |")
        lines += ["", "Detection on the training corpus (the corpus protocol): per auxiliary set and detector, AUC and "
                  "what its default threshold flags.", ""]
        for aux, dets in s.get("detection", {}).items():
            lines += [f"### Auxiliary set `{aux}`", "", "| detector | AUC | flagged poisoned | flagged clean |", "|---|---|---|---|"]
            for name, d in dets.items():
                auc = "-" if d.get("auc") is None else f"{d['auc']:.3f}"
                lines.append(f"| {name} | {auc} | {d['poisoned']} / {d['poisoned_total']} | {d['clean']} / {d['clean_total']} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write(folder: Path, section: dict[str, Any], top: dict[str, Any]) -> None:
    """Merge the section into results.json's `retrain` (other keys kept) and write retrain.md, atomically."""
    from pipeline.lab.detect_report import RESULTS, load
    from pipeline.storage import write_text_atomic

    results = load(folder)
    results["retrain"] = {**results.get("retrain", {}), **{k: {**v, **top} for k, v in section.items()}}
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(str(folder / RESULTS), json.dumps(results, indent=2) + "\n")
    write_text_atomic(str(folder / "retrain.md"), render(results))
