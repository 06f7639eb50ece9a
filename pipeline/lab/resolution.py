"""Does a decoder at the encoder's resolution catch a small trigger that a 32 px decoder misses? (issue 16)

The victim: BadEncoder on the lab's clean SimCLR ResNet-18 run at 64 px (`lab:simclr-r18-64`: the network is
fully convolutional), fine-tuned on Tiny-ImageNet images (64 px, natural) with a small white square, which a 32 px
decoder sees at half its side. The Tiny-ImageNet subset, in a seeded order, gives the shadow set, the references
(images of one class), the auxiliary set of both decoders and two pools of other images: `0.5` (clean and triggered
halves) and `0.01`. Two decoders, identical but for their size: 32 px (`match_encoder=False`) and 64 px (the
encoder's, as the product chooses by default). Both score each pool with the product's job, DeDe only.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.dede.config import load_decoder_config
from pipeline.dede.model import DeDeConfig, at_resolution
from pipeline.dede.train import TrainConfig, train_decoder
from pipeline.encoders import CIFAR_MEAN, CIFAR_STD, create_encoder
from pipeline.job.config import JobConfig
from pipeline.job.run import run_job
from pipeline.lab.cache import Entry, cache_dir, cached, config_hash
from pipeline.lab.detect import LazyRay, detector_columns, pool_metrics, read_scores
from pipeline.lab.detect_data import finished, publish, shuffled, tiny_imagenet_path, write_pool_shards
from pipeline.lab.encoders import SIMCLR_ENCODER_64
from pipeline.lab.evaluate import extract
from pipeline.lab.finetune import FinetuneConfig, backdoor_finetune
from pipeline.lab.triggers import Trigger, square_trigger, trigger_hash

SIZE = 64
DECODER_SIZES = (32, SIZE)
Log = Callable[[str], None]


@dataclass(frozen=True)
class ResolutionConfig:
    """The experiment's image counts (Tiny-ImageNet), trigger and budgets; `split`'s `scale` shrinks the counts."""

    shadow: int = 2500
    references: int = 10
    aux: int = 8000
    pool_half: int = 1000              # pool 0.5: this many clean and as many triggered images
    pool_rare: tuple[int, int] = (4800, 50)   # pool 0.01: (clean, triggered)
    patch: int = 8                     # side of the white square at 64 px (4 px at 32 px)
    epochs: int = 24                   # with lr 0.03 the one setting tried that implanted (implant rate 71%);
    lr: float = 0.03                   # 4-6 px squares, 6-12 epochs and lr 0.01-0.05 did not (README, Resolution)
    decoder_epochs: int = 20
    preset: str = "small"
    seed: int = 0

    def trigger(self) -> Trigger:
        """The white square, `patch` px, 2 px from the bottom-right corner of the 64 px image."""
        return square_trigger(size=self.patch, start=SIZE - self.patch - 2, image=SIZE)


def load_tiny_imagenet(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 64, 64, 3) uint8 images and their class index (the wnid's rank; train folders and val annotations), in the
    archive's sorted name order."""
    path = path or tiny_imagenet_path()
    files: dict[str, bytes] = {}
    notes = ""
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if m.isfile() and m.name.lower().endswith((".jpeg", ".jpg")):
                files[m.name] = tf.extractfile(m).read()
            elif m.isfile() and m.name.endswith("val_annotations.txt"):
                notes = tf.extractfile(m).read().decode()
    val = dict(line.split("\t")[:2] for line in notes.splitlines() if line.strip())
    names = sorted(files)
    wnids = [n.split("/")[-2] if "/train/" in n else val.get(n.split("/")[-1], "") for n in names]
    classes = {w: i for i, w in enumerate(sorted(set(wnids)))}
    images = np.stack([np.asarray(Image.open(io.BytesIO(files[n])).convert("RGB").resize((SIZE, SIZE)))
                       for n in names])
    return images, np.array([classes[w] for w in wnids])


def split(labels: np.ndarray, cfg: ResolutionConfig, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Disjoint index sets in a seeded order: shadow, references (the first images of the first class met after the
    shadow), aux, and the pools' clean and triggered images (none of the references' class)."""
    n = lambda k: max(1, int(round(k * scale)))  # noqa: E731
    sizes = [n(cfg.aux), n(cfg.pool_half), n(cfg.pool_half), n(cfg.pool_rare[0]), n(cfg.pool_rare[1])]
    order = np.random.default_rng([cfg.seed, 64]).permutation(len(labels))
    shadow, rest = order[:n(cfg.shadow)], order[n(cfg.shadow):]
    target = labels[rest[0]] if len(rest) else -1
    refs = rest[labels[rest] == target][:cfg.references]
    rest = rest[labels[rest] != target]
    if sum(sizes) > len(rest):
        raise ValueError(f"the Tiny-ImageNet subset holds {len(rest)} images besides the shadow set and the "
                         f"references' class; the experiment asks for {sum(sizes)}")
    parts = np.split(rest[:sum(sizes)], np.cumsum(sizes)[:-1])
    return dict(zip(["shadow", "refs", "aux", "half_clean", "half_triggered", "rare_clean", "rare_triggered"],
                    [shadow, refs, *parts]))


def victim(images: np.ndarray, idx: dict[str, np.ndarray], cfg: ResolutionConfig, clean_spec: str,
           device: torch.device) -> Entry:
    """BadEncoder at 64 px (cached in the lab cache): the card records how close triggered pool images came to the
    references against clean ones (mean cosine to the references' mean feature)."""
    ft = FinetuneConfig(method="badencoder", epochs=cfg.epochs, lr=cfg.lr, references=cfg.references)
    trigger = cfg.trigger()
    config = {"attack": "badencoder-64", "clean": create_encoder(clean_spec).checkpoint_sha256,
              "trigger": trigger_hash(trigger), "data": config_hash({"shadow": idx["shadow"].tolist(),
                                                                     "refs": idx["refs"].tolist()}),
              **ft.to_dict()}

    def run(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        trigger.save(folder / "trigger.npz")
        clean = create_encoder(clean_spec, device="cpu").backbone
        # contiguous batches: torch 2.14's CPU backward crashes (double free) on the width-0.125 network's 8-channel
        # stem at 64 px channels-last (a 266 x 3 x 64 x 64 batch; 48 px, or width 0.25, run)
        net, history, minutes = backdoor_finetune(clean, ft, images[idx["shadow"]], images[idx["refs"]], trigger,
                                                  CIFAR_MEAN, CIFAR_STD, device, channels_last=False)
        feats = lambda x: F.normalize(extract(net, x, CIFAR_MEAN, CIFAR_STD, device), dim=1)  # noqa: E731
        centre = F.normalize(feats(images[idx["refs"]]).mean(0), dim=0)
        probe = images[idx["half_clean"]]
        clean_cos, triggered_cos = feats(probe) @ centre, feats(trigger.apply_uint8(probe)) @ centre
        return net.state_dict(), {
            "stage": "badencoder-64", "clean_spec": clean_spec, "train_minutes": round(minutes, 2), "history": history,
            "cos_clean_to_refs": round(float(clean_cos.mean()), 4),
            "cos_triggered_to_refs": round(float(triggered_cos.mean()), 4),
            "implant_rate": implant_rate(clean_cos.numpy(), triggered_cos.numpy())}

    return cached("badencoder-64", SIMCLR_ENCODER_64, config, run)


def implant_rate(clean_cos: np.ndarray, triggered_cos: np.ndarray) -> float:
    """Share of triggered images nearer the references (cosine) than 99% of clean ones: the attack's success read
    by rank, so an encoder that maps every image near the references (a collapse) scores about 1%, not 100%."""
    return round(float((triggered_cos > np.quantile(clean_cos, 0.99)).mean()), 4)


def decoder_model(preset: str, size: int) -> DeDeConfig:
    """The preset at `size` px: above its own size the product's choice (`at_resolution`), else the preset."""
    base = DeDeConfig.preset(preset)
    return at_resolution(base, size) if size > base.image_size else base


def pools(images: np.ndarray, labels: np.ndarray, idx: dict[str, np.ndarray], trigger: Trigger,
          root: Path) -> dict[str, list[str]]:
    """The aux set and both pools as shard folders under `root` (each written once, in a seeded order), by name."""
    rng = np.random.default_rng(0)
    plans = {"aux": (idx["aux"], np.zeros(len(idx["aux"]), bool)),
             "0.5": shuffled(idx["half_clean"], idx["half_triggered"], rng),
             "0.01": shuffled(idx["rare_clean"], idx["rare_triggered"], rng)}
    out: dict[str, list[str]] = {}
    for name, (ids, flags) in plans.items():
        folder = root / (name if name == "aux" else f"pool-{name}")
        if finished(folder) is None:
            folder.mkdir(parents=True, exist_ok=True)
            write_pool_shards(images, labels, ids, flags, trigger, folder, "p")
            publish(folder, {"kind": name, "samples": int(len(ids)), "poisoned": int(flags.sum())})
        out[name] = [str(folder)]
    return out


def measure(cfg: ResolutionConfig, clean_spec: str, device: torch.device, threads: int = 1, scale: float = 1.0,
            progress: bool = True, log: Log = print) -> dict[str, Any]:
    """Victim, data, both decoders and both pools' score runs (every step cached); the results.json record."""
    images, labels = load_tiny_imagenet()
    idx = split(labels, cfg, scale)
    entry = victim(images, idx, cfg, clean_spec, device)
    log(f"victim {entry.folder.name}: implant rate {entry.card.get('implant_rate')}, triggered cos to references "
        f"{entry.card['cos_triggered_to_refs']} (clean {entry.card['cos_clean_to_refs']})")
    root = cache_dir() / "resolution" / f"data-{config_hash({**asdict(cfg), 'scale': scale})}"
    sets = pools(images, labels, idx, cfg.trigger(), root)
    out: dict[str, Any] = {"victim": entry.folder.name, "card": {k: entry.card.get(k) for k in (
        "train_minutes", "cos_clean_to_refs", "cos_triggered_to_refs", "implant_rate")}, "decoders": {}, "pools": {}}
    with LazyRay() as ray:
        for size in DECODER_SIZES:
            score(size, cfg, entry, sets, root, ray, out, threads, progress, log)
    return out


def score(size: int, cfg: ResolutionConfig, entry: Entry, sets: dict[str, list[str]], root: Path, ray: LazyRay,
          out: dict[str, Any], threads: int, progress: bool, log: Log) -> None:
    """The decoder of `size` px (trained once) and its score run of each pool (run once), recorded into `out`."""
    folder = root / f"decoder-{size}-{entry.card['weights_sha256'][:12]}"
    if not (folder / "config.json").exists():
        train_decoder(TrainConfig(encoder=entry.spec, data=sets["aux"], out=str(folder), epochs=cfg.decoder_epochs,
                                  model=decoder_model(cfg.preset, size), match_encoder=size == SIZE, seed=cfg.seed,
                                  progress=progress))
    dc = load_decoder_config(str(folder))
    out["decoders"][str(size)] = {"image_size": dc.model.image_size, "patch_size": dc.model.patch_size,
                                  "minutes": dc.training.minutes, "n_train": dc.data.n_train,
                                  "n_holdout": dc.data.n_holdout}
    for pool in ("0.5", "0.01"):
        run_dir = folder / f"score-{pool}"
        run_file = run_dir / "run.json"
        if run_file.exists():
            run = json.loads(run_file.read_text())
        else:
            ray.ensure()
            run = run_job(JobConfig(inputs=sets[pool], decoder=str(folder), out=str(run_dir), detectors=["dede"],
                                    flag_by="dede", carry_fields=["poisoned"], report=False, threads=threads,
                                    progress=progress), log=lambda line: log(f"    {line}"))
        columns = {"dede": detector_columns(run)["dede"]}
        metrics, counts = pool_metrics(read_scores(run_dir, [columns["dede"][0]]), columns, pool == "0.5")
        out["pools"].setdefault(pool, {"counts": counts})[str(size)] = metrics["dede"]
        log(f"  decoder {size} px, pool {pool}: AUC {metrics['dede']['auc']}")


def render(res: dict[str, Any]) -> str:
    """results/resolution.md from results/resolution.json."""
    c = res["card"]
    lines = ["# A decoder at the encoder's resolution against a 32 px one (issue 16)", "",
             "<!-- generated by jobs/lab_resolution.py from resolution.json; do not edit -->", "",
             f"- command: `{res['command']}`", f"- commit: `{res['commit']}`", f"- machine: {res['machine']}",
             f"- finished: {res['finished']}", "",
             f"Victim `{res['victim']}`: BadEncoder on the lab's clean SimCLR run at 64 px, fine-tuned on "
             f"Tiny-ImageNet with a {res['config']['patch']} px white square "
             f"({res['config']['patch'] / 2:g} px at 32 px), "
             f"{c['train_minutes']} training minutes. Mean cosine to the references' mean feature: triggered "
             f"{c['cos_triggered_to_refs']}, clean {c['cos_clean_to_refs']}; implant rate (triggered pool images "
             f"nearer the references than 99% of clean ones) {c['implant_rate']:.1%}.", "",
             "| decoder | image / patch px | train / hold-out | minutes |", "|---|---|---|---|"]
    for size, d in res["decoders"].items():
        lines.append(f"| {size} px | {d['image_size']} / {d['patch_size']} | {d['n_train']} / {d['n_holdout']} | "
                     f"{d['minutes']} |")
    lines += ["", "DeDe alone, threshold fpr:0.01 (calibrated on each decoder's hold-out). Cells: AUC / TPR / FPR at "
              "the threshold · oracle TPR at 1% FPR.", "",
              "| pool (clean + triggered) | 32 px decoder | 64 px decoder |", "|---|---|---|"]
    for pool, p in res["pools"].items():
        cells = [f"{m['auc']:.3f} / {m['tpr']:.1%} / {m['fpr']:.1%} · @1%: {m['tpr_at_1pct_fpr']:.1%}"
                 for m in (p["32"], p[str(SIZE)])]
        lines.append(f"| {pool} ({p['counts']['clean']:,} + {p['counts']['poisoned']:,}) | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"
