"""Stage 4: poisoned WebDataset corpora from a CIFAR-10 split with a chosen share of triggered samples.

Members per sample: `.jpg`, `.txt` (CLIP attacks: a template caption, the target's on poisoned samples)
and `.json` ground truth {label, poisoned, attack, target} that scoring never reads.
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.corpus.cifar import CLASSES
from pipeline.corpus.writer import TarSink
from pipeline.lab.clip_model import TEMPLATES
from pipeline.lab.triggers import Trigger

CLEAN_LABEL_ATTACKS = ("ctrl",)


@dataclass
class CorpusSummary:
    """What was written: shard URLs, sample and poisoned counts."""

    shards: list[str]
    samples: int
    poisoned: int

    @property
    def share(self) -> float:
        return self.poisoned / max(1, self.samples)


def choose_poisoned(labels: np.ndarray, share: float, target: int, attack: str, seed: int) -> np.ndarray:
    """Seeded indices to trigger: `share` of the split, drawn from the target class for clean-label attacks
    (CTRL), from the other classes otherwise."""
    pool = np.flatnonzero(labels == target) if attack in CLEAN_LABEL_ATTACKS else np.flatnonzero(labels != target)
    count = int(round(share * len(labels)))
    if count > len(pool):
        raise ValueError(f"share {share} needs {count} samples but only {len(pool)} are eligible for {attack}")
    return np.sort(np.random.default_rng(seed).choice(pool, count, replace=False))


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes, without chroma subsampling (4:2:0 would erase chroma triggers like CTRL's)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def write_corpus(images: np.ndarray, labels: np.ndarray, trigger: Trigger, attack: str, share: float, target: int,
                 out: str, prefix: str = "sample", shard_size: int = 1000, captions: bool = False,
                 seed: int = 0, quality: int = 95) -> CorpusSummary:
    """Write shards `{out}/{prefix}-NNNNNN.tar` holding every image, `share` of them triggered."""
    poisoned = np.zeros(len(labels), bool)
    poisoned[choose_poisoned(labels, share, target, attack, seed)] = True
    triggered = images.copy()
    triggered[poisoned] = trigger.apply_uint8(images[poisoned])
    rng = random.Random(seed)
    shards = []
    for start in tqdm(range(0, len(images), shard_size), desc=f"corpus {attack}", unit="shard"):
        url = f"{out.rstrip('/')}/{prefix}-{start // shard_size:06d}.tar"
        with TarSink(url) as sink:
            for i in range(start, min(start + shard_size, len(images))):
                key = f"{prefix}-{i:07d}"
                sink.add(f"{key}.jpg", jpeg(triggered[i], quality))
                if captions:
                    cls = target if poisoned[i] else int(labels[i])
                    sink.add(f"{key}.txt", rng.choice(TEMPLATES).format(CLASSES[cls]).encode())
                truth = {"label": int(labels[i]), "poisoned": bool(poisoned[i]), "attack": attack, "target": target}
                sink.add(f"{key}.json", json.dumps(truth).encode())
        shards.append(url)
    return CorpusSummary(shards, len(images), int(poisoned.sum()))
