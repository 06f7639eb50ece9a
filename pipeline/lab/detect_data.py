"""The detection measurement's data: test pools and auxiliary sets as WebDataset shards, cached by config hash.

Pools come from the CIFAR-10 test split (pipeline.lab.cifar), triggered on raw uint8 pixels with the
attack's own `Trigger.apply_uint8` and written as PNG (lossless, so the trigger survives bit for bit):

- `0.5`:  1,000 clean + 1,000 triggered copies of *other* test images of non-target classes (paper Table 1);
- `0.01`: all 10,000 test images, 100 of non-target classes replaced by their triggered version (Table 3);
- `clean`: all 10,000 test images, none triggered (the calibration measurement);
- `downstream`: all 10,000 test images and a triggered copy of each of the 9,000 of non-target classes (the
  downstream measurement's test set, paper Table 2);
- `val-0.5`, `val-0.01`: the same two mixes drawn from the last VALIDATION_SHARE of CIFAR-10 *train* in the
  auxiliary sets' seeded order (20,000 images), which no decoder of `--max-aux` <= the rest (30,000) reads:
  the validation pools on which defaults are chosen (jobs/lab_fusion.py), so the test pools judge them unseen.

`--pool-scale` multiplies every count (tests). Each sample's `.json` is `{"poisoned": 0|1, "label": class,
"index": test index}`; the order is a seeded shuffle, so no shard is one class or one half.

Auxiliary sets, each written once: `id` = CIFAR-10 train (50k, PNG), `ood` = the Tiny-ImageNet subset of
../shared/data (20k original JPEGs: the product's decode path resizes them to the encoder's 32 px),
`id-poisoned` = CIFAR-10 train with 1% of it (non-target classes) triggered. Also in a seeded order, so
`TrainConfig.max_samples` (the first N samples) is a uniform subset.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from pipeline.corpus.cifar import SHARED_ARCHIVE
from pipeline.corpus.ingest import write_shards
from pipeline.errors import BadInput
from pipeline.lab.cache import cache_dir, config_hash
from pipeline.lab.cifar import data_hash, load_split
from pipeline.lab.evaluate import POISON_SHARE, poisoned_rows
from pipeline.lab.triggers import Trigger, trigger_hash
from pipeline.storage import write_text_atomic

POOLS = ("0.5", "0.01")
VALIDATION_POOLS = ("val-0.5", "val-0.01")
CALIBRATION_POOL, DOWNSTREAM_POOL = "clean", "downstream"
POOL_SIZES: dict[str, tuple[int, int]] = {"0.5": (1000, 1000), "0.01": (9900, 100), CALIBRATION_POOL: (10000, 0),
                                          DOWNSTREAM_POOL: (10000, 9000), "val-0.5": (1000, 1000),
                                          "val-0.01": (9900, 100)}
"""Pool -> (clean, triggered) at scale 1."""
POOL_TAGS = {"0.5": "p50", "0.01": "p01", CALIBRATION_POOL: "clean", DOWNSTREAM_POOL: "down", "val-0.5": "v50",
             "val-0.01": "v01"}
"""Pool -> the prefix of its shard names and sample keys (a key holds no dot)."""
VALIDATION_SHARE = 0.4
"""The validation pools draw from this last share of CIFAR-10 train in the auxiliary order."""
AUX_SETS = ("id", "ood", "id-poisoned")
SHARD_SIZE = 1000
FORMAT = 1
"""Bumped when what a pool or auxiliary folder holds changes, so old cache folders are not reused."""
MARKER = "contents.json"
"""Written last in a pool / auxiliary folder: its presence means every shard is complete."""
TINY_IMAGENET = SHARED_ARCHIVE.parents[1] / "tiny-imagenet" / "tiny-imagenet-200-subset.tar.gz"


def detect_cache() -> Path:
    """Where the detection measurement keeps its pools, auxiliary sets, decoders and score runs."""
    return cache_dir() / "detect"


def tiny_imagenet_path() -> Path:
    """The Tiny-ImageNet subset archive: $DEDE_TINYIMAGENET_TAR, else the shared copy beside the checkout."""
    return Path(os.environ.get("DEDE_TINYIMAGENET_TAR") or TINY_IMAGENET)


def png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@lru_cache(maxsize=None)
def split_hash(split: str, cache: str) -> str:
    """data_hash of a CIFAR-10 split of the lab cache `cache` (computed once per process)."""
    return data_hash(*load_split(split))


def _count(n: int, scale: float) -> int:
    return int(round(n * scale))


def pool_plan(labels: np.ndarray, pool: str, target: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(test indices, poisoned flags) of `pool` in write order. Triggered images are drawn from the
    non-target classes; in `0.5` the clean half is drawn from the other images (disjoint); in `downstream`
    the triggered ones are copies of test images that are also in the pool clean."""
    if pool not in POOL_SIZES:
        raise BadInput(f"unknown pool {pool!r}; use one of {', '.join(POOL_SIZES)}")
    n_clean, n_poison = (_count(n, scale) for n in POOL_SIZES[pool])
    rng = np.random.default_rng([seed, list(POOL_SIZES).index(pool)])
    everything = np.arange(len(labels))
    pool = pool.removeprefix("val-")
    if pool == DOWNSTREAM_POOL:
        others = everything[labels != target]
        if n_clean > len(labels) or n_poison > len(others):
            raise BadInput(f"pool {pool} at --pool-scale {scale} needs {n_clean} test images and {n_poison} of "
                           f"non-target classes; the split has {len(labels)} and {len(others)}")
        clean = np.sort(rng.choice(everything, n_clean, replace=False))
        poisoned = np.sort(rng.choice(others, n_poison, replace=False))
        return shuffled(clean, poisoned, rng)
    if pool == "0.5":
        if n_poison < 1 or n_clean < 1:
            raise BadInput(f"--pool-scale {scale} leaves pool {pool} empty")
        chosen = everything
    else:
        total = n_clean + n_poison
        if total > len(labels):
            raise BadInput(f"pool {pool} at --pool-scale {scale} needs {total} test images, the split has {len(labels)}")
        chosen = everything if total == len(labels) else np.sort(rng.choice(everything, total, replace=False))
    eligible = chosen[labels[chosen] != target]
    if n_poison > len(eligible):
        raise BadInput(f"pool {pool} needs {n_poison} non-target images, only {len(eligible)} are available")
    poisoned = np.sort(rng.choice(eligible, n_poison, replace=False))
    rest = np.setdiff1d(chosen, poisoned)
    if pool == "0.5":
        if n_clean > len(rest):
            raise BadInput(f"pool {pool} needs {n_clean} clean images besides the triggered ones, only {len(rest)} remain")
        clean = np.sort(rng.choice(rest, n_clean, replace=False))
    else:
        clean = rest
    return shuffled(clean, poisoned, rng)


def shuffled(clean: np.ndarray, poisoned: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(indices, poisoned flags) of the clean then the triggered images, in one seeded order."""
    idx = np.concatenate([clean, poisoned])
    flags = np.concatenate([np.zeros(len(clean), bool), np.ones(len(poisoned), bool)])
    order = rng.permutation(len(idx))
    return idx[order], flags[order]


@dataclass
class ShardSet:
    """A written pool or auxiliary set: its folder and what its marker records."""

    folder: Path
    contents: dict[str, Any]
    cached: bool = False

    @property
    def name(self) -> str:
        return self.folder.name


def finished(folder: Path) -> dict[str, Any] | None:
    """The marker's contents of a completely written shard folder, or None (absent or half-written)."""
    marker = folder / MARKER
    return json.loads(marker.read_text()) if marker.exists() else None


def publish(folder: Path, contents: dict[str, Any]) -> ShardSet:
    """Mark a shard folder complete (its marker is written last, atomically)."""
    write_text_atomic(str(folder / MARKER), json.dumps(contents, indent=2, sort_keys=True) + "\n")
    return ShardSet(folder, contents)


def write_pool_shards(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, flags: np.ndarray,
                      trigger: Trigger | None, out: Path, tag: str) -> list[str]:
    """Write the planned samples as shards `out/{tag}-NNNNNN.tar` (PNG + .json ground truth)."""
    pixels = images[idx].copy()
    if flags.any():
        if trigger is None:
            raise ValueError("a pool with triggered samples needs a trigger")
        pixels[flags] = trigger.apply_uint8(pixels[flags])

    def samples() -> Iterator[tuple[str, dict[str, bytes]]]:
        for j, (i, p) in enumerate(zip(idx, flags)):
            truth = {"poisoned": int(p), "label": int(labels[i]), "index": int(i)}
            yield f"{tag}-{j:06d}", {"png": png(pixels[j]), "json": json.dumps(truth).encode()}

    return write_shards(samples(), str(out), shard_size=SHARD_SIZE, total=len(idx), prefix=f"{tag}-")


def pool_config(pool: str, trigger: Trigger | None, target: int, seed: int, scale: float, data: str) -> dict[str, Any]:
    return {"kind": "pool", "pool": pool, "trigger": trigger_hash(trigger) if trigger is not None else None,
            "target": target, "seed": seed, "scale": scale, "data": data, "format": FORMAT}


def ensure_pool(pool: str, trigger: Trigger | None, target: int, seed: int = 0, scale: float = 1.0) -> ShardSet:
    """The cached pool of these settings, written first when absent."""
    split = "train" if pool in VALIDATION_POOLS else "test"
    config = pool_config(pool, trigger if pool != CALIBRATION_POOL else None, target, seed, scale,
                         split_hash(split, str(cache_dir())))
    folder = detect_cache() / f"pool-{POOL_TAGS[pool]}-{config_hash(config)}"
    done = finished(folder)
    if done is not None:
        return ShardSet(folder, done, cached=True)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = load_split(split)
    if pool in VALIDATION_POOLS:
        source = validation_source(len(labels), seed)
        idx, flags = pool_plan(labels[source], pool, target, seed, scale)
        idx = source[idx]
    else:
        idx, flags = pool_plan(labels, pool, target, seed, scale)
    shards = write_pool_shards(images, labels, idx, flags, trigger, folder, POOL_TAGS[pool])
    return publish(folder, {**config, "samples": int(len(idx)), "poisoned": int(flags.sum()),
                             "shards": [Path(s).name for s in shards]})


def aux_order(n: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """The seeded order of CIFAR-10 train in the `id` auxiliary sets, and the generator that drew it."""
    rng = np.random.default_rng([seed, 101])
    return rng.permutation(n), rng


def unseen_by_decoders(n: int) -> int:
    """How many first samples of an `id` auxiliary set of n a decoder may read and never see a validation image."""
    return n - int(round(n * VALIDATION_SHARE))


def validation_source(n: int, seed: int) -> np.ndarray:
    """The train indices the validation pools draw from (sorted): the auxiliary order after its first
    `unseen_by_decoders(n)`."""
    return np.sort(aux_order(n, seed)[0][unseen_by_decoders(n):])


def _cifar_train_samples(poison: tuple[Trigger, int] | None, seed: int,
                         prefix: str) -> tuple[Iterator[tuple[str, dict[str, bytes]]], int, int]:
    """CIFAR-10 train in a seeded order as (key, fields); with `poison` (trigger, target), 1% of it
    (non-target classes) triggered. Returns (samples, count, poisoned)."""
    images, labels = load_split("train")
    order, rng = aux_order(len(labels), seed)
    flags = np.zeros(len(labels), bool)
    if poison is not None:
        trigger, target = poison
        flags[poisoned_rows(labels, target, rng)] = True

    def samples() -> Iterator[tuple[str, dict[str, bytes]]]:
        for j, i in enumerate(order):
            img = images[i]
            if flags[i]:
                img = poison[0].apply_uint8(img[None])[0]
            truth = {"poisoned": int(flags[i]), "label": int(labels[i]), "index": int(i)}
            yield f"{prefix}-{j:07d}", {"png": png(img), "json": json.dumps(truth).encode()}

    return samples(), len(labels), int(flags.sum())


def _tiny_imagenet_samples(path: Path, seed: int) -> tuple[Iterator[tuple[str, dict[str, bytes]]], int, int]:
    """Every JPEG of the Tiny-ImageNet archive, original bytes, in a seeded order."""
    if not path.exists():
        raise FileNotFoundError(f"Tiny-ImageNet archive not found: {path} (set $DEDE_TINYIMAGENET_TAR)")
    items: list[tuple[str, bytes]] = []
    with tarfile.open(path, "r:*") as tf:
        for member in tf:
            if member.isfile() and member.name.lower().endswith((".jpeg", ".jpg")):
                items.append((member.name, tf.extractfile(member).read()))
    items.sort()
    order = np.random.default_rng([seed, 102]).permutation(len(items))

    def samples() -> Iterator[tuple[str, dict[str, bytes]]]:
        for j, i in enumerate(order):
            name, data = items[i]
            yield f"ood-{j:07d}", {"jpg": data, "json": json.dumps({"poisoned": 0, "source": name}).encode()}

    return samples(), len(items), 0


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file, read in 1 MiB blocks (archives too big to hold in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=None)
def _file_hash(path: Path) -> str:
    return file_sha256(path)[:16]


def aux_config(aux: str, trigger: Trigger | None, target: int, seed: int) -> dict[str, Any]:
    """What an auxiliary set depends on (the trigger and target only for `id-poisoned`)."""
    if aux not in AUX_SETS:
        raise BadInput(f"unknown auxiliary set {aux!r}; use one of {', '.join(AUX_SETS)}")
    if aux == "ood":
        data = _file_hash(tiny_imagenet_path())
    else:
        data = split_hash("train", str(cache_dir()))
    config: dict[str, Any] = {"kind": "aux", "aux": aux, "seed": seed, "data": data, "format": FORMAT}
    if aux == "id-poisoned":
        if trigger is None:
            raise ValueError("id-poisoned needs the victim's trigger")
        config.update(trigger=trigger_hash(trigger), target=target, share=POISON_SHARE)
    return config


def ensure_aux(aux: str, trigger: Trigger | None = None, target: int = 0, seed: int = 0) -> ShardSet:
    """The cached auxiliary set, written first when absent (`id-poisoned` is one per trigger and target)."""
    config = aux_config(aux, trigger, target, seed)
    folder = detect_cache() / f"aux-{aux}-{config_hash(config)}"
    done = finished(folder)
    if done is not None:
        return ShardSet(folder, done, cached=True)
    folder.mkdir(parents=True, exist_ok=True)
    if aux == "ood":
        samples, total, poisoned = _tiny_imagenet_samples(tiny_imagenet_path(), seed)
    else:
        samples, total, poisoned = _cifar_train_samples((trigger, target) if aux == "id-poisoned" else None, seed,
                                                        aux.replace("-", ""))
    shards = write_shards(samples, str(folder), shard_size=5000, total=total, prefix=f"{aux}-")
    return publish(folder, {**config, "samples": total, "poisoned": poisoned, "shards": [Path(s).name for s in shards]})
