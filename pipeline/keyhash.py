"""Deterministic 64-bit hashes of sample keys: they choose the calibration hold-out, the decoder's
reference bank and the corpus reference sample, so reruns and resumes pick the same rows."""
from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def key_hash(text: str) -> int:
    """The first 8 bytes of the text's sha256 (UTF-8, lone surrogates kept) as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")


def key_hashes(texts: Iterable[str]) -> np.ndarray:
    """`key_hash` of every text, as a uint64 array."""
    return np.fromiter((key_hash(t) for t in texts), dtype=np.uint64)
