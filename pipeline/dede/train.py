"""Train a DeDe decoder for a frozen encoder on auxiliary WebDataset shards, then calibrate it and save
its clean reference (hold-out scores and embeddings, a bank of training embeddings) for the embedding
detectors.

The auxiliary set is read once (tolerantly: bad samples are skipped and counted), held in memory
as uint8 at the decoder's resolution, and embedded once: the victim is frozen and DeDe trains
without augmentation, so every epoch after the first would recompute identical embeddings.
"""
from __future__ import annotations

import heapq
import io
import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.corpus.decode import DecodeError, load_sample_image
from pipeline.corpus.reader import iter_shard
from pipeline.corpus.shards import expand_shards
from pipeline.dede.config import DecoderConfig, EncoderInfo, Pixels, Training, TrainingData
from pipeline.dede.model import DeDe, DeDeConfig, at_resolution, create_dede, masked_mse
from pipeline.dede.reference import MAX_BANK, CleanReference, bank_rows, save_reference
from pipeline.dede.scorer import decoder_pixels, score_batch
from pipeline.dede.store import save_decoder
from pipeline.dede.thresholds import calibration_summary
from pipeline.detect.spec import IMAGE_DETECTORS
from pipeline.detect.transplant import RECIPIENTS
from pipeline.encoders import CIFAR_MEAN, CIFAR_STD, Encoder, create_encoder
from pipeline.checkpoints import read_bytes
from pipeline.errors import BadInput, one_line
from pipeline.keyhash import key_hash, key_hashes
from pipeline.storage import exists, write_bytes_atomic

STATE = "train_state.pt"
SUBSETS = ("hash", "first")


@dataclass
class TrainConfig:
    """One training run: encoder, data, output folder, optimisation and the decoder's architecture."""

    encoder: str
    data: list[str]
    out: str
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"           # cosine (with linear warm-up) or constant
    warmup_epochs: float = 1.0
    max_samples: int | None = None
    subset: str = "hash"                # with max_samples: the N of lowest key hash ("hash") or the first N read
    holdout: float = 0.1                # share of auxiliary samples kept out for calibration
    max_holdout: int = 10000            # thousands, so the 1% quantile rests on dozens of samples
    max_bank: int = MAX_BANK            # training embeddings kept in reference.safetensors for the detectors
    trim: float = 0.0                   # share of each batch's highest-error images left out of the loss
    seed: int = 0
    device: str | None = None
    model: DeDeConfig | str = "paper"   # a preset name (DeDeConfig.preset) or a config; victim_dim comes from the encoder
    pixel_mean: tuple[float, float, float] = CIFAR_MEAN
    pixel_std: tuple[float, float, float] = CIFAR_STD
    resume: bool = False
    progress: bool = True
    match_encoder: bool = True          # a larger encoder's input size becomes the decoder's (model.at_resolution)

    def __post_init__(self) -> None:
        if self.subset not in SUBSETS:
            raise BadInput(f"subset must be one of {', '.join(SUBSETS)}, got {self.subset!r}")
        if not 0 <= self.trim < 0.5:
            raise BadInput(f"trim must be in [0, 0.5), got {self.trim}")
        if isinstance(self.model, str):
            self.model = DeDeConfig.preset(self.model)


@dataclass
class AuxData:
    keys: list[str]
    images: np.ndarray                  # (N, S, S, 3) uint8 at the decoder's size
    embeddings: torch.Tensor            # (N, D) float32
    bad: Counter = field(default_factory=Counter)


def load_auxiliary(cfg: TrainConfig, encoder: Encoder) -> AuxData:
    """Read, decode and embed the auxiliary shards; bad samples are counted by error kind."""
    shards = expand_shards(cfg.data)
    image_size = cfg.model.image_size
    size = max(encoder.input_size, image_size)
    lowest = bool(cfg.max_samples) and cfg.subset == "hash"
    keys, images, bad = [], [], Counter()
    heap: list[tuple[int, int, str, np.ndarray]] = []   # (-hash, -order, key, image): the N of lowest hash so far
    bar = tqdm(total=None if lowest else cfg.max_samples, desc="reading auxiliary data", unit="img",
               disable=None if cfg.progress else True)
    seen = 0
    for url in shards:
        for s in iter_shard(url):
            seen += 1
            if lowest:
                bar.update(1)                              # every sample is read; the bar counts them
            if s.error:
                bad[s.error.split(":", 1)[0]] += 1
                continue
            h = key_hash(s.key) if lowest else 0
            if lowest and len(heap) >= cfg.max_samples and h >= -heap[0][0]:
                continue                                   # not among the N lowest: never decoded
            try:
                image = load_sample_image(s.fields, size)
            except DecodeError as e:
                bad[str(e).split(":", 1)[0]] += 1
                continue
            if lowest:
                (heapq.heappush if len(heap) < cfg.max_samples else heapq.heappushpop)(heap, (-h, -seen, s.key, image))
                continue
            keys.append(s.key)
            images.append(image)
            bar.update(1)
            if cfg.max_samples and len(keys) >= cfg.max_samples:
                break
        if cfg.max_samples and not lowest and len(keys) >= cfg.max_samples:
            break
    bar.close()
    for _, _, key, image in sorted(heap, reverse=True):     # lowest hash first
        keys.append(key)
        images.append(image)
    if not keys:
        raise ValueError(f"no usable images in {cfg.data} (bad samples: {dict(bad)})")
    arr = np.stack(images)
    embs = []
    for i in tqdm(range(0, len(arr), cfg.batch_size), desc="embedding", disable=None if cfg.progress else True):
        with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=encoder.device.type == "cuda"):
            embs.append(encoder.embed(torch.from_numpy(arr[i:i + cfg.batch_size])).float().cpu())
    if size != image_size:
        arr = np.stack([np.asarray(torch.nn.functional.interpolate(
            torch.from_numpy(a).permute(2, 0, 1)[None].float(), size=(image_size,) * 2, mode="bilinear",
            antialias=True)[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)) for a in arr])
    return AuxData(keys, arr, torch.cat(embs), bad)


MIN_HOLDOUT = 200                       # a smaller hold-out cannot place a 1% quantile
QUANTILE_HOLDOUT = 2000                 # the 1% quantile on 20 samples: realised FPR within about +-0.2 points


def split_holdout(keys: list[str], share: float, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, holdout indices): the samples of lowest key hash, a share of them, but at least
    QUANTILE_HOLDOUT or a quarter of the set, whichever is fewer, and at least MIN_HOLDOUT or half of a
    smaller set; at most cap. The hash is of the sample key alone, so membership does not change when
    shards are renamed, moved or read in another order."""
    if len(keys) < 2:
        raise BadInput(f"{len(keys)} auxiliary image(s): a decoder needs at least 2 (one to train, one to calibrate)")
    n = len(keys)
    n_hold = min(cap, max(int(np.ceil(share * n)), min(QUANTILE_HOLDOUT, n // 4), min(MIN_HOLDOUT, n // 2)))
    hold = np.argsort(key_hashes(keys), kind="stable")[:max(1, n_hold)]
    mask = np.ones(len(keys), bool)
    mask[hold] = False
    return np.flatnonzero(mask), np.sort(hold)


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return f


def train_decoder(cfg: TrainConfig) -> DecoderConfig:
    """Train, calibrate and save a decoder (weights, clean reference, config last) in cfg.out; returns the
    saved config."""
    if cfg.schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}: use cosine or constant")
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = create_encoder(cfg.encoder, device)
    if cfg.match_encoder and encoder.input_size > cfg.model.image_size:
        cfg = replace(cfg, model=at_resolution(cfg.model, encoder.input_size))
    t0 = time.time()
    aux = load_auxiliary(cfg, encoder)
    train_idx, hold_idx = split_holdout(aux.keys, cfg.holdout, cfg.max_holdout)
    if len(train_idx) < 2:
        raise ValueError(f"only {len(train_idx)} training images after the hold-out; give more data")
    model = create_dede(cfg.model, victim_dim=encoder.embed_dim).to(device)
    mcfg = model.cfg
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bs = min(cfg.batch_size, len(train_idx))
    steps = len(train_idx) // bs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    start_epoch, history = 0, []
    state_url = f"{cfg.out}/{STATE}"
    if cfg.resume and exists(state_url):
        state = _load_state(state_url)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch, history = int(state["epoch"]), [float(v) for v in state["history"]]
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.from_numpy(aux.images)
    autocast = device.type == "cuda"
    for epoch in range(start_epoch, cfg.epochs):
        gen.manual_seed(cfg.seed * 1000003 + epoch)
        order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=gen)]
        model.train()
        total, n, tstart = 0.0, 0, time.time()
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if cfg.progress else True)
        for step in bar:
            idx = order[step * bs:(step + 1) * bs]
            x = decoder_pixels(images[idx].to(device), mcfg.image_size, cfg.pixel_mean, cfg.pixel_std)
            emb = aux.embeddings[idx].to(device)
            noise = torch.rand(len(idx), mcfg.num_patches, generator=gen).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                pred, mask = model(x, emb, mcfg.train_mask_ratio, noise)
            loss = masked_mse(pred, x, mask, cfg.trim)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            n += len(idx)
            bar.set_postfix(loss=f"{total / n:.4f}", samples_s=f"{n / (time.time() - tstart):.0f}")
        history.append(total / max(n, 1))
        _save_state(state_url, model, opt, sched, epoch + 1, history)
    model.eval()
    hashes = key_hashes(aux.keys)
    recipients = aux.images[bank_rows(hashes, train_idx, RECIPIENTS)]       # clean training images, lowest hash first
    held = [score_batch(model, encoder, aux.images[hold_idx[i:i + bs]], [aux.keys[j] for j in hold_idx[i:i + bs]],
                        cfg.pixel_mean, cfg.pixel_std, mcfg.test_mask_ratio, autocast, IMAGE_DETECTORS, recipients)
            for i in range(0, len(hold_idx), bs)]
    hold_scores = np.concatenate([h.scores for h in held])
    embeddings = aux.embeddings.numpy().astype(np.float16)
    bank = bank_rows(hashes, train_idx, cfg.max_bank)
    clean = CleanReference(holdout_scores=hold_scores, holdout_embeddings=embeddings[hold_idx],
                           bank_embeddings=embeddings[bank],
                           holdout_difficulty=np.concatenate([h.difficulty for h in held]),
                           **{f"holdout_{n}": np.concatenate([h.images[n] for h in held]) for n in IMAGE_DETECTORS},
                           recipients=recipients)
    reference = save_reference(cfg.out, clean, cfg.max_bank)
    final_loss = history[-1] if history else float("nan")
    hidden_values = 3 * (mcfg.num_patches - model.num_visible(mcfg.test_mask_ratio)) * mcfg.patch_size ** 2
    config = DecoderConfig(
        model=mcfg,
        encoder=EncoderInfo(spec=str(encoder.spec), checkpoint_sha256=encoder.checkpoint_sha256,
                            embed_dim=encoder.embed_dim, input_size=encoder.input_size),
        pixels=Pixels(mean=tuple(cfg.pixel_mean), std=tuple(cfg.pixel_std)),
        work_size=max(encoder.input_size, mcfg.image_size),
        training=Training(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                          schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs, holdout=cfg.holdout,
                          max_holdout=cfg.max_holdout, max_samples=cfg.max_samples, subset=cfg.subset, seed=cfg.seed,
                          trim=cfg.trim,
                          device=str(device),
                          loss_history=history, final_loss=final_loss, minutes=round((time.time() - t0) / 60, 2)),
        data=TrainingData(inputs=list(cfg.data), n_train=int(len(train_idx)), n_holdout=int(len(hold_idx)),
                          holdout_from_train=False, skipped=dict(aux.bad)),
        calibration=calibration_summary(hold_scores, paper_threshold=final_loss * hidden_values),
        reference=reference,
    )
    return save_decoder(cfg.out, model, config)


def _save_state(url: str, model: DeDe, opt, sched, epoch: int, history: list[float]) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "epoch": epoch, "history": history}, buf)
    write_bytes_atomic(url, buf.getvalue())


def _load_state(url: str) -> dict:
    """The state `_save_state` wrote; anything else (a pickle with code, a truncated file) is a one-line BadInput."""
    try:
        state = torch.load(io.BytesIO(read_bytes(url)), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal becomes one clear line
        raise BadInput(f"refusing to resume from {url}: it is not a training state this tool wrote ({one_line(e)}); "
                       f"delete it or train without --resume") from None
    if not isinstance(state, dict) or not {"model", "opt", "sched", "epoch", "history"} <= set(state):
        raise BadInput(f"refusing to resume from {url}: it is not a training state this tool wrote; "
                       f"delete it or train without --resume")
    return state
