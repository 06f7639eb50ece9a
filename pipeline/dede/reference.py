"""The decoder folder's clean reference, `reference.safetensors`: the hold-out's DeDe scores and victim
embeddings, and a bank of the training images' embeddings. The embedding detectors (pipeline/detect)
are calibrated on it and the `:bank` ones score against it. Its sha256 is recorded in config.json and
checked whenever it is read, like the weights'."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from pipeline.checkpoints import read_checked, save_safetensors
from pipeline.dede.config import CONFIG, DecoderConfig, ReferenceInfo
from pipeline.errors import BadInput, one_line

REFERENCE = "reference.safetensors"
MAX_BANK = 100_000          # training embeddings kept in the bank, lowest key hash first
_DTYPES = {"holdout_scores": np.float32, "holdout_embeddings": np.float16, "bank_embeddings": np.float16}
_OPTIONAL = {"holdout_difficulty": np.float32,    # absent in references written before it
             "holdout_occlusion": np.float32,     # likewise
             "holdout_transplant": np.float32,    # likewise
             "recipients": np.uint8}              # likewise
_PER_HOLDOUT = ("holdout_difficulty", "holdout_occlusion", "holdout_transplant")


@dataclass(frozen=True)
class CleanReference:
    """Clean auxiliary data as the detectors see it; row i of the hold-out arrays is one sample."""

    holdout_scores: np.ndarray          # (n_holdout,) float32: DeDe scores of the hold-out
    holdout_embeddings: np.ndarray      # (n_holdout, d) float16
    bank_embeddings: np.ndarray         # (n_bank, d) float16: training rows, lowest key hash first
    holdout_difficulty: np.ndarray | None = None   # (n_holdout,) float32: the hold-out's masked_difficulty
    holdout_occlusion: np.ndarray | None = None    # (n_holdout,) float32: the hold-out's occlusion scores
    holdout_transplant: np.ndarray | None = None   # (n_holdout,) float32: the hold-out's transplant scores
    recipients: np.ndarray | None = None           # (R, S, S, 3) uint8: the clean images transplant pastes onto

    def holdout(self, detector: str) -> np.ndarray | None:
        """The hold-out's scores of an image detector (spec.IMAGE_DETECTORS); None when the reference predates it."""
        return getattr(self, f"holdout_{detector}")


def bank_rows(hashes: np.ndarray, train_idx: np.ndarray, max_bank: int = MAX_BANK) -> np.ndarray:
    """The training rows of the bank: the `max_bank` of lowest key hash, in increasing hash order."""
    order = np.argsort(np.asarray(hashes)[train_idx], kind="stable")
    return np.asarray(train_idx)[order[:max_bank]]


def save_reference(out_dir: str, ref: CleanReference, max_bank: int = MAX_BANK) -> ReferenceInfo:
    """Write DIR/reference.safetensors; returns what config.json records of it."""
    arrays = {name: np.ascontiguousarray(getattr(ref, name), dtype) for name, dtype in {**_DTYPES, **_OPTIONAL}.items()
              if getattr(ref, name) is not None}
    sha = save_safetensors({k: torch.from_numpy(v) for k, v in arrays.items()}, f"{out_dir}/{REFERENCE}")
    return ReferenceInfo(file=REFERENCE, sha256=sha, n_holdout=int(len(ref.holdout_scores)),
                         n_bank=int(len(ref.bank_embeddings)), embed_dim=int(ref.holdout_embeddings.shape[1]),
                         max_bank=int(max_bank))


def load_reference(decoder_dir: str, config: DecoderConfig, purpose: str = "the embedding detectors") -> CleanReference:
    """The folder's clean reference, checked against config.json; one-line BadInput when the decoder has
    none (trained before it existed) or the file is missing, replaced or damaged."""
    info = config.reference
    if info is None:
        raise BadInput(f"decoder {decoder_dir} has no clean reference ({REFERENCE}), which {purpose} need; "
                       f"retrain the decoder with jobs/train_decoder.py")
    url = f"{decoder_dir}/{info.file}"
    data = read_checked(url, info.sha256, "decoder reference", f"{CONFIG}'s reference.sha256")
    try:
        arrays = st_load(data)
        ref = CleanReference(**{name: np.asarray(arrays[name], dtype) for name, dtype in _DTYPES.items()},
                             **{name: np.asarray(arrays[name], dtype) for name, dtype in _OPTIONAL.items() if name in arrays})
    except (SafetensorError, KeyError, TypeError) as e:
        raise BadInput(f"decoder reference {url} is not a reference this tool wrote ({one_line(e)}); "
                       f"retrain the decoder") from None
    shapes = (ref.holdout_scores.shape, ref.holdout_embeddings.shape, ref.bank_embeddings.shape)
    optional = [getattr(ref, name) for name in _PER_HOLDOUT]
    recipients = ref.recipients
    if shapes != ((info.n_holdout,), (info.n_holdout, info.embed_dim), (info.n_bank, info.embed_dim)) or any(
            a is not None and a.shape != (info.n_holdout,) for a in optional) or (
            recipients is not None and (recipients.ndim != 4 or recipients.shape[3] != 3)):
        raise BadInput(f"decoder reference {url} holds arrays of shapes {shapes}, not those {CONFIG} records; "
                       f"retrain the decoder")
    return ref
