"""The one scoring API: a batch of images (and their keys) -> DeDe scores and victim embeddings.

The Ray job, the lab, the benchmarks and the tests all score through `Scorer.score`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError

from pipeline.dede.model import DeDe, masked_difficulty, masked_sse
from pipeline.dede.reference import load_reference
from pipeline.dede.store import load_decoder
from pipeline.dede.thresholds import Calibration, ThresholdPolicy, resolve_threshold
from pipeline.detect.probes import probe_scores
from pipeline.detect.spec import TRANSPLANT
from pipeline.encoders import Encoder, create_encoder, resize_square, to_float01
from pipeline.errors import BadInput, one_line


def key_noise(keys: Sequence[str], num_patches: int) -> torch.Tensor:
    """(B, T) mask noise seeded by each sample's key, so a sample always gets the same mask."""
    rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(k.encode("utf-8", "surrogatepass")).digest()[:8], "little"))
            .random(num_patches) for k in keys]
    return torch.from_numpy(np.stack(rows)).float() if rows else torch.zeros(0, num_patches)


def decoder_pixels(images: torch.Tensor, image_size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, H, W, 3) or [0,1] (B, 3, H, W) -> the decoder's normalised pixel space (B, 3, S, S)."""
    x = resize_square(to_float01(images), image_size)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@dataclass
class ScoreOutput:
    scores: np.ndarray       # (B,) float32, reconstruction error
    embeddings: np.ndarray   # (B, D) float16, the victim's embedding
    difficulty: np.ndarray   # (B,) float32, the same error for the hidden pixels' mean colour (masked_difficulty)
    images: dict[str, np.ndarray] = field(default_factory=dict)   # (B,) float32 by image detector (spec.IMAGE_DETECTORS)


class Scorer:
    """A trained decoder with its victim encoder, ready to score images."""

    def __init__(self, decoder_dir: str, device: str | torch.device | None = None, encoder_spec: str | None = None):
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.config, self.decoder_sha256 = load_decoder(decoder_dir, self.device)
        spec = encoder_spec or self.config.encoder.spec
        self.encoder: Encoder = _create_encoder(decoder_dir, spec, self.device)
        expected = self.config.encoder.checkpoint_sha256
        if encoder_spec is None and expected and expected != self.encoder.checkpoint_sha256:
            raise BadInput(f"encoder checkpoint of {spec} does not match the one decoder {decoder_dir} was trained for")
        if self.encoder.embed_dim != self.model.cfg.victim_dim:
            raise BadInput(f"encoder {spec} gives {self.encoder.embed_dim}-dim embeddings but decoder {decoder_dir} "
                           f"expects {self.model.cfg.victim_dim} (it was trained for {self.config.encoder.spec}); "
                           f"pass that encoder or train a decoder for this one")
        self.calibration: Calibration = self.config.calibration
        self.pixel_mean, self.pixel_std = self.config.pixels.mean, self.config.pixels.std
        self.image_size = self.model.cfg.image_size
        self.mask_ratio = self.model.cfg.test_mask_ratio
        self.autocast = self.device.type == "cuda"
        self.decoder_dir = decoder_dir
        self._recipients: np.ndarray | None = None

    @property
    def work_size(self) -> int:
        """The side the CPU stage resizes images to before scoring."""
        return max(self.encoder.input_size, self.image_size)

    def threshold(self, policy: ThresholdPolicy | str | float = "fpr:0.01", scores: np.ndarray | None = None) -> float:
        """The score threshold of a policy (see `thresholds.parse_threshold`) for this decoder."""
        return resolve_threshold(policy, self.calibration, scores)

    @property
    def recipients(self) -> np.ndarray:
        """The clean images transplant pastes onto, from the decoder's reference (read once)."""
        if self._recipients is None:
            ref = load_reference(self.decoder_dir, self.config, "the transplant detector's recipient images")
            if ref.recipients is None:
                raise BadInput(f"decoder {self.decoder_dir} predates {TRANSPLANT}'s recipient images; retrain it")
            self._recipients = ref.recipients
        return self._recipients

    @torch.no_grad()
    def score(self, images: np.ndarray | torch.Tensor, keys: Sequence[str], detectors: Sequence[str] = ()) -> ScoreOutput:
        """images: (B, S, S, 3) uint8 (S = work_size, or any square size); keys: the samples' keys; `detectors`: the
        image detectors to score too (occlusion: STEPS**2 more encoder passes; transplant: RECIPIENTS more)."""
        return score_batch(self.model, self.encoder, images, keys, self.pixel_mean, self.pixel_std, self.mask_ratio,
                           self.autocast, detectors, self.recipients if TRANSPLANT in detectors else None)

    @torch.no_grad()
    def reconstruct(self, images: np.ndarray | torch.Tensor, keys: Sequence[str]) -> np.ndarray:
        """The decoder's reconstruction of each image from its embedding, with the key-seeded masks `score`
        uses (visible patches show the input): (B, S, S, 3) uint8, S = the decoder's image size."""
        _, target, pred, mask = reconstruct_batch(self.model, self.encoder, images, keys, self.pixel_mean,
                                                  self.pixel_std, self.mask_ratio, self.autocast)
        out = pred.float() * mask + target.float() * (1 - mask)
        m = torch.tensor(self.pixel_mean, device=out.device).view(1, 3, 1, 1)
        s = torch.tensor(self.pixel_std, device=out.device).view(1, 3, 1, 1)
        pixels = (out * s + m).clamp(0, 1).permute(0, 2, 3, 1)
        return (pixels * 255).round().to(torch.uint8).cpu().numpy()


def _create_encoder(decoder_dir: str, spec: str, device: torch.device) -> Encoder:
    """The victim encoder; a refused or unreadable checkpoint is one line naming the decoder."""
    try:
        return create_encoder(spec, device)
    except (ValueError, FileNotFoundError, SafetensorError) as e:
        raise BadInput(f"cannot load encoder {spec} for decoder {decoder_dir}: {one_line(e)}") from None


def on_device(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """The images as a tensor on `device` (through pinned memory from the host to a GPU); a no-op when there."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    if device.type == "cuda" and x.device.type == "cpu":
        x = x.pin_memory()
    return x.to(device, non_blocking=True)


@torch.no_grad()
def reconstruct_batch(model: DeDe, encoder: Encoder, images: np.ndarray | torch.Tensor, keys: Sequence[str],
                      pixel_mean: Sequence[float], pixel_std: Sequence[float], mask_ratio: float,
                      autocast: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed and reconstruct with key-seeded masks at `mask_ratio`: (embedding, normalised target,
    prediction, mask with 1 = hidden)."""
    if len(keys) != len(images):
        raise ValueError(f"{len(images)} images but {len(keys)} keys")
    dev = encoder.device
    x = on_device(images, dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
        emb = encoder.embed(x)
        target = decoder_pixels(x, model.cfg.image_size, pixel_mean, pixel_std)
        noise = key_noise(keys, model.cfg.num_patches).to(dev)
        pred, mask = model(target, emb, mask_ratio, noise)
    return emb, target, pred, mask


@torch.no_grad()
def score_batch(model: DeDe, encoder: Encoder, images: np.ndarray | torch.Tensor, keys: Sequence[str],
                pixel_mean: Sequence[float], pixel_std: Sequence[float], mask_ratio: float,
                autocast: bool = False, detectors: Sequence[str] = (),
                recipients: np.ndarray | None = None) -> ScoreOutput:
    """Embed, reconstruct with key-seeded masks at `mask_ratio`, and return per-image SSE and difficulty (and the
    scores of the image `detectors` asked; transplant pastes onto `recipients`)."""
    x = on_device(images, encoder.device)                     # moved once, for the decoder and the image detectors
    emb, target, pred, mask = reconstruct_batch(model, encoder, x, keys, pixel_mean, pixel_std, mask_ratio, autocast)
    with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=autocast):
        probed = probe_scores(encoder, x, emb, detectors, recipients)
    return ScoreOutput(masked_sse(pred, target, mask).cpu().numpy().astype(np.float32),
                       emb.float().cpu().numpy().astype(np.float16),
                       masked_difficulty(target, mask).cpu().numpy().astype(np.float32),
                       {n: v.cpu().numpy().astype(np.float32) for n, v in probed.items()})
