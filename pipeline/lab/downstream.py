"""Downstream protection (issue 13 item 9; paper Table 2, DEDE.md §2.7): does filtering keep the backdoor out
of a classifier built on the victim's features?

The classifier is the lab's L2 linear probe (`evaluate.LinearProbe(l2=True)`: L2-normalised features, as
DeDe's downstream code and BadEncoder's classifiers use; the paper trains a small MLP instead). Its training
set is CIFAR-10 train with 1% of it triggered and relabelled to the target (the `id-poisoned` auxiliary
set); its test set is the `downstream` pool (every test image, and a triggered copy of each of non-target
class). Each detector, at its default threshold, removes what it flags from the training set and rejects
what it flags at test time: a rejected triggered image is a failed attack, a rejected clean image a wrong
answer (`clean_accuracy`; `clean_accuracy_kept` is the accuracy on the clean images it keeps). Both sets
are scored by the product's job with the victim's decoder, so features and flags come from its Parquet.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.lab.detect import (DEFAULT_AUX, LazyRay, Log, Settings, Victim, ensure_decoder, ensure_run, ground_truth,
                                 run_flags)
from pipeline.lab.detect_data import DOWNSTREAM_POOL, ensure_aux, ensure_pool
from pipeline.lab.detect_report import NO_DEFENCE
from pipeline.lab.evaluate import LinearProbe

TRAIN_SET = "id-poisoned"
"""The training set: CIFAR-10 train with 1% of it (non-target classes) triggered."""
NONE = NO_DEFENCE
"""The row without a defence: the probe on the whole poisoned training set, nothing rejected."""


@dataclass
class Split:
    """The scored rows of one set: L2-probe inputs, class labels, ground truth and, per detector, its flags."""

    features: np.ndarray          # (N, D) float32
    labels: np.ndarray            # (N,) int64, the images' true classes
    poisoned: np.ndarray          # (N,) bool
    flags: dict[str, np.ndarray]  # detector -> (N,) bool


def split_from_run(table: dict[str, np.ndarray], flags: dict[str, np.ndarray]) -> Split:
    """The rows of a score run (detect.run_flags' table and flags) that were scored and hold an embedding,
    a label and ground truth."""
    ok, y = ground_truth(table)
    emb = np.asarray(table["embedding"], np.float32)
    labels = np.asarray([-1 if v is None else int(v) for v in table["label"]], np.int64)
    keep = ok & np.isfinite(emb).all(axis=1) & (labels >= 0)
    return Split(emb[keep], labels[keep], y[keep], {k: np.asarray(v, bool)[keep] for k, v in flags.items()})


def outcome(train: Split, test: Split, target: int, removed: np.ndarray, rejected: np.ndarray,
            seed: int = 0) -> dict[str, Any]:
    """CA and ASR of a probe trained on the kept training rows (triggered ones labelled `target`) and
    tested on the kept test rows; rejected rows count against CA and for the defence."""
    keep = ~removed
    y = np.where(train.poisoned, target, train.labels)[keep]
    torch.manual_seed(seed)
    probe = LinearProbe(l2=True).fit(torch.from_numpy(train.features[keep]), torch.from_numpy(y))
    pred = probe.predict(torch.from_numpy(test.features)).numpy()
    clean, triggered = ~test.poisoned, test.poisoned & (test.labels != target)
    hit = (pred == test.labels) & ~rejected
    kept_clean = clean & ~rejected
    return {"clean_accuracy": round(float(hit[clean].mean()), 4),
            "clean_accuracy_kept": round(float(hit[kept_clean].mean()), 4) if kept_clean.any() else None,
            "attack_success_rate": round(float(((pred == target) & ~rejected)[triggered].mean()), 4),
            "removed_poisoned": int((removed & train.poisoned).sum()),
            "removed_clean": int((removed & ~train.poisoned).sum()),
            "rejected_clean": int((rejected & clean).sum()), "rejected_triggered": int((rejected & triggered).sum())}


def downstream(train: Split, test: Split, target: int) -> dict[str, dict[str, Any]]:
    """`none` and every detector both sets were flagged by: its outcome."""
    n_train, n_test = np.zeros(len(train.labels), bool), np.zeros(len(test.labels), bool)
    out = {NONE: outcome(train, test, target, n_train, n_test)}
    for name in train.flags:
        if name in test.flags:
            out[name] = outcome(train, test, target, train.flags[name], test.flags[name])
    return out


def counts(train: Split, test: Split, target: int) -> dict[str, int]:
    """The sizes behind the figures: training rows (triggered), clean test rows, triggered test rows."""
    return {"train": int(len(train.labels)), "train_poisoned": int(train.poisoned.sum()),
            "test_clean": int((~test.poisoned).sum()),
            "test_triggered": int((test.poisoned & (test.labels != target)).sum())}


def measure(train_run: tuple[Path, dict[str, Any]], test_run: tuple[Path, dict[str, Any]],
            target: int) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Per detector (and `none`) the downstream outcome of two score runs (training set, test set), and the
    counts."""
    sets = []
    for run_dir, run in (train_run, test_run):
        _, table, flags = run_flags(run_dir, run, ("label", "embedding"))
        sets.append(split_from_run(table, flags))
    return downstream(sets[0], sets[1], target), counts(sets[0], sets[1], target)


def measure_victim(victim: Victim, decoder: Path, aux: str, settings: Settings, ray: LazyRay,
                   log: Log = print) -> tuple[dict[str, Any], bool]:
    """What the downstream measurement adds to the victim's results.json entry: `downstream` (per detector)
    and `downstream_runs` (the decoder's auxiliary set, the score runs, the counts); and whether all of it
    came from the cache."""
    train_set = ensure_aux(TRAIN_SET, victim.trigger, victim.target, settings.pool_seed)
    test_set = ensure_pool(DOWNSTREAM_POOL, victim.trigger, victim.target, settings.pool_seed, settings.pool_scale)
    runs, all_cached = {}, train_set.cached and test_set.cached
    for role, shards in (("train", train_set), ("test", test_set)):
        run_dir, run, cached = ensure_run(decoder, shards, settings, ray, log)
        runs[role] = (run_dir, run)
        all_cached &= cached
        log(f"  downstream {role}: {'cached' if cached else 'scored'} {run_dir.name} ({shards.contents['samples']} "
            f"samples, {shards.contents['poisoned']} triggered)")
    rows, n = measure(runs["train"], runs["test"], victim.target)
    log(f"  downstream: no defence CA {rows[NONE]['clean_accuracy']:.1%} ASR {rows[NONE]['attack_success_rate']:.1%}"
        + (f"; dede CA {rows['dede']['clean_accuracy']:.1%} ASR {rows['dede']['attack_success_rate']:.1%}"
           if "dede" in rows else ""))
    return {"downstream": rows,
            "downstream_runs": {"aux": aux, "train": runs["train"][0].name, "test": runs["test"][0].name,
                                "train_set": train_set.name, "test_pool": test_set.name, **n}}, all_cached


def measure_all(victims: dict[str, Victim | str], aux_sets: list[str], settings: Settings,
                log: Log = print) -> dict[str, dict[str, Any]]:
    """Per measured victim, its downstream blocks, with the decoder of the default auxiliary set (else of
    the first of `aux_sets`): the detection's own cached decoder, trained first when absent."""
    aux_name = DEFAULT_AUX if DEFAULT_AUX in aux_sets else aux_sets[0]
    out: dict[str, dict[str, Any]] = {}
    with LazyRay() as ray:
        for attack, victim in victims.items():
            if isinstance(victim, str):
                continue
            log(f"{attack}: downstream")
            aux = ensure_aux(aux_name, victim.trigger, victim.target, settings.pool_seed)
            decoder, _, _ = ensure_decoder(victim.spec, victim.weights_sha256, aux, settings, 0, log)
            out[attack], cached = measure_victim(victim, decoder, aux_name, settings, ray, log)
            log(f"{attack}: downstream done{' (all cached)' if cached else ''}")
    return out
