"""The demo: a real backdoor, found by the product (`jobs/demo.py`).

1. the victim: a short BadEncoder fine-tune (the lab's own `backdoor_finetune`, BadEncoder's white
   square, target class airplane) of the committed clean lab encoder `assets/demo-encoder/` (a SimCLR
   CIFAR ResNet-18 of width 0.125, its card beside it; checked against the card's sha256 first);
   with `clean=True` the clean encoder itself is the victim;
2. the corpus: the CIFAR-10 test split with 1% of it (non-target classes) triggered, each sample's `.json`
   holding its ground truth `{"poisoned": 0|1, ...}` (pipeline.lab.detect_data's `0.01` pool; with
   `clean=True` its `clean` pool, nothing triggered);
3. the auxiliary data: CIFAR-10 train images packed by the product's ingest;
4. the product from there on: `train_decoder`, then `run_job` with the embedding detectors and the
   report, and the flag-by detector's AUC / TPR / FPR against the ground truth.

Everything lands under `out`: encoder/, corpus/, aux/, decoder/, run/ (run/report/report.html).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.checkpoints import read_checked, save_safetensors, sha256_bytes
from pipeline.corpus.cifar import archive_path
from pipeline.corpus.ingest import cifar10_samples, write_shards
from pipeline.dede.train import TrainConfig, train_decoder
from pipeline.detect import metrics
from pipeline.detect.spec import plan_detectors
from pipeline.encoders import CIFAR_MEAN, CIFAR_STD, create_encoder
from pipeline.errors import BadInput, WorkFailed
from pipeline.job.config import JobConfig
from pipeline.job.run import run_job
from pipeline.lab.cifar import load_split
from pipeline.lab.compute import setup
from pipeline.lab.detect import detector_columns, ground_truth, read_scores, result_key
from pipeline.lab.detect_data import CALIBRATION_POOL, POOL_SIZES, pool_plan, write_pool_shards
from pipeline.lab.encoders import SIMCLR_ENCODER
from pipeline.lab.finetune import FinetuneConfig, backdoor_finetune, pick_shadow_and_refs
from pipeline.lab.triggers import Trigger, square_trigger

ROOT = Path(__file__).resolve().parents[2]
DEMO_ENCODER = ROOT / "assets" / "demo-encoder" / "model.safetensors"
"""The committed clean lab encoder; its card.json (beside it) records weights_sha256 and the command."""
POOL = "0.01"
"""pipeline.lab.detect_data's pool of 1% triggered test images."""
TARGET = 0
"""BadEncoder's target class (airplane)."""
FINETUNE_EPOCHS, SHADOW = 6, 2560
"""The short BadEncoder fine-tune: 6 epochs over 2,560 shadow images (120 steps of 128; the lab's
default is 12 epochs over 5,000). Its kNN ASR: README, demo section."""
FLAG_BY = plan_detectors().flag_by
"""The demo scores with the product's default detectors (DeDe, its ensemble partner and the ensemble, chosen on
the lab's detection table, not on the demo) and prints the metrics of the default flag-by detector."""
THRESHOLD = "fpr:0.005"
"""The scoring run's threshold policy (the product's default is fpr:0.01; why not here: README, demo)."""
DECODER_EPOCHS = 4
DECODER_PRESET = "small"
TEST_SIZE = 10000
"""Images of the CIFAR-10 test split (the corpus at full size)."""

Log = Callable[[str], None]


@dataclass
class DemoConfig:
    out: str = "demo"
    clean: bool = False                  # no backdoor: the clean encoder is the victim, nothing triggered
    corpus_size: int = TEST_SIZE         # test images in the corpus (1% of them triggered unless clean)
    aux_samples: int = 5000              # CIFAR-10 train images the decoder trains and calibrates on
    epochs: int = DECODER_EPOCHS         # decoder epochs
    preset: str = DECODER_PRESET
    finetune_epochs: int = FINETUNE_EPOCHS
    shadow: int = SHADOW
    encoder: Path = DEMO_ENCODER         # the clean encoder's weights, card.json beside them
    device: str = "auto"
    threads: int | None = None           # torch threads of the fine-tune and the decoder training
    seed: int = 0
    progress: bool = field(default_factory=lambda: sys.stderr.isatty())


@dataclass
class DemoResult:
    verdict: str
    backdoor: bool | None
    report: str
    flag_by: str
    metrics: dict[str, float | None]
    seconds: dict[str, float]

    def metrics_line(self) -> str:
        m = self.metrics
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        tpr = "n/a" if m["tpr"] is None else f"{m['tpr']:.1%}"
        line = f"AUC {auc}  TPR {tpr}  FPR {m['fpr']:.2%}"
        return line + ("  (no triggered samples: clean corpus)" if m["auc"] is None else f"  ({self.flag_by})")


def checked_encoder(weights: Path) -> str:
    """The spec of the clean demo encoder, after checking its file against card.json's weights_sha256;
    a one-line BadInput when it differs or either file is missing."""
    card_path = weights.parent / "card.json"
    try:
        card = json.loads(card_path.read_text())
        sha = card["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInput(f"demo encoder card {card_path} is unreadable or has no weights_sha256 ({e})") from None
    read_checked(str(weights), sha, "demo encoder", f"the weights_sha256 of {card_path}")
    return f"lab:{SIMCLR_ENCODER}@{weights.resolve()}"


def cifar_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 32, 32, 3), labels): the lab's arrays (decoded once from the shared archive into
    the lab cache), else torchvision's download."""
    try:
        return load_split(split)
    except FileNotFoundError:
        if archive_path().exists():
            raise
    import torchvision

    cache = os.path.join(os.path.expanduser("~"), ".cache", "dede", "torchvision")
    ds = torchvision.datasets.CIFAR10(cache, train=split == "train", download=True)
    return np.asarray(ds.data, np.uint8), np.asarray(ds.targets, np.int64)


def _fresh(folder: Path) -> Path:
    """`folder` created, without the shards an earlier demo left there."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.tar"):
        old.unlink()
    return folder


def finetune_victim(cfg: DemoConfig, clean_spec: str, trigger: Trigger, device: torch.device, log: Log) -> str:
    """BadEncoder on the clean encoder (the lab's code, cfg's short setting); the backdoored backbone is
    saved under out/encoder; returns its spec."""
    ft = FinetuneConfig(method="badencoder", epochs=cfg.finetune_epochs, shadow=cfg.shadow, target=TARGET,
                        seed=cfg.seed)
    images, labels = cifar_split("train")
    if ft.shadow + ft.references > len(images):
        raise BadInput(f"--shadow {ft.shadow} leaves no target-class images for the references")
    clean = create_encoder(clean_spec, device="cpu").backbone
    shadow, refs = pick_shadow_and_refs(images, labels, ft, clean, CIFAR_MEAN, CIFAR_STD, device)
    log(f"demo: BadEncoder fine-tune of the clean encoder ({ft.epochs} epochs over {len(shadow)} shadow images, "
        f"white 10x10 square -> class {TARGET})")
    net, history, _ = backdoor_finetune(clean, ft, shadow, refs, trigger, CIFAR_MEAN, CIFAR_STD, device)
    weights = Path(cfg.out).resolve() / "encoder" / "model.safetensors"
    sha = save_safetensors(net.state_dict(), str(weights), metadata={"attack": "badencoder", "clean": sha256_bytes(
        cfg.encoder.read_bytes())})
    last = history[-1] if history else {}
    (weights.parent / "card.json").write_text(json.dumps(
        {"attack": "badencoder", "clean_spec": clean_spec, "config": ft.to_dict(), "history": history,
         "weights_sha256": sha}, indent=2) + "\n")
    log(f"demo: backdoored encoder -> {weights} (final l0 {last.get('l0', float('nan')):.3f}, "
        f"l2 {last.get('l2', float('nan')):.3f})")
    return f"lab:{SIMCLR_ENCODER}@{weights}"


def write_corpus(cfg: DemoConfig, trigger: Trigger | None, log: Log) -> Path:
    """The test split (cfg.corpus_size of it) as shards with .json ground truth: 1% triggered, or none."""
    images, labels = cifar_split("test")
    pool = CALIBRATION_POOL if trigger is None else POOL
    if cfg.corpus_size > len(labels):
        raise BadInput(f"--corpus-size {cfg.corpus_size}: the CIFAR-10 test split has {len(labels)} images")
    idx, flags = pool_plan(labels, pool, TARGET, cfg.seed, cfg.corpus_size / sum(POOL_SIZES[pool]))
    folder = _fresh(Path(cfg.out).resolve() / "corpus")
    write_pool_shards(images, labels, idx, flags, trigger, folder, "corpus")
    log(f"demo: corpus of {len(idx)} CIFAR-10 test images, {int(flags.sum())} triggered -> {folder}")
    return folder


def write_aux(cfg: DemoConfig, log: Log) -> Path:
    """The first cfg.aux_samples CIFAR-10 train images, packed by the product's ingest."""
    samples = cifar10_samples("train")[: cfg.aux_samples]
    folder = _fresh(Path(cfg.out).resolve() / "aux")
    write_shards(iter(samples), str(folder), shard_size=1000, total=len(samples))
    log(f"demo: auxiliary set of {len(samples)} CIFAR-10 train images -> {folder}")
    return folder


def flag_by_metrics(run_dir: Path, run: dict) -> dict[str, float | None]:
    """AUC, and TPR / FPR at the run's threshold, of the flag-by detector's column against the carried
    ground truth; AUC and TPR are None for a corpus with no triggered sample."""
    col, threshold = detector_columns(run)[result_key(run.get("flag_by", "dede"))]
    table = read_scores(run_dir, [col])
    ok, y = ground_truth(table)
    y, s = y[ok], np.asarray(table[col], np.float64)[ok]
    if y.any() and not y.all():
        r = metrics.rates(y, s, threshold)
        return {"auc": metrics.auc(y, s), "tpr": r["tpr"], "fpr": r["fpr"], "threshold": threshold}
    return {"auc": None, "tpr": None, "fpr": float((s[~y] > threshold).mean()), "threshold": threshold}


def run_demo(cfg: DemoConfig, log: Log = print) -> DemoResult:
    """Victim, corpus, auxiliary set, decoder, scoring run and report under cfg.out; the last three lines
    logged are the verdict, `report: PATH` and the flag-by detector's AUC / TPR / FPR."""
    for name in ("corpus_size", "aux_samples", "epochs", "finetune_epochs", "shadow"):
        if getattr(cfg, name) < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    clean_spec = checked_encoder(Path(cfg.encoder))
    device = setup(cfg.device, cfg.threads)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    trigger = None if cfg.clean else square_trigger()
    if cfg.clean:
        victim = clean_spec
        log(f"demo: --clean: the clean encoder {cfg.encoder} is the victim, nothing is triggered")
    else:
        victim = finetune_victim(cfg, clean_spec, trigger, device, log)
    seconds["victim"] = time.perf_counter() - t
    t = time.perf_counter()
    corpus = write_corpus(cfg, trigger, log)
    aux = write_aux(cfg, log)
    seconds["data"] = time.perf_counter() - t
    t = time.perf_counter()
    log(f"demo: training the decoder ({cfg.preset}, {cfg.epochs} epochs)")
    dec = train_decoder(TrainConfig(encoder=victim, data=[str(aux)], out=str(out / "decoder"), epochs=cfg.epochs,
                                    model=cfg.preset, device=str(device), seed=cfg.seed, progress=cfg.progress))
    log(f"demo: decoder -> {out / 'decoder'} (final loss {dec.training.final_loss:.4f}, "
        f"{dec.data.n_train} train / {dec.data.n_holdout} held-out images)")
    seconds["decoder"] = time.perf_counter() - t
    t = time.perf_counter()
    run_dir = out / "run"
    run = run_job(JobConfig(inputs=[str(corpus)], out=str(run_dir), decoder=str(out / "decoder"),
                            carry_fields=["poisoned"], threshold=THRESHOLD, report=True,
                            overwrite=True, gpus_per_actor=1.0 if device.type == "cuda" else 0.0), log=log)
    seconds["score"] = time.perf_counter() - t
    summary_path = run_dir / "report" / "summary.json"
    if not summary_path.exists():
        raise WorkFailed(f"the run in {run_dir} finished without a report; see the warning above")
    summary = json.loads(summary_path.read_text())
    result = DemoResult(verdict=summary["verdict"]["line"], backdoor=summary["verdict"]["backdoor"],
                        report=f"{summary['report'].rstrip('/')}/report.html", flag_by=run.get("flag_by", FLAG_BY),
                        metrics=flag_by_metrics(run_dir, run), seconds={k: round(v, 1) for k, v in seconds.items()})
    log(result.metrics_line())
    return result
