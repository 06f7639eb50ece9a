"""DataComp uid lists: the `.npy` format DataComp's resharder takes as `--subset-file`.

Implemented format (DataComp's webdataset-resharder README, "Selecting samples"): a 1-D numpy
structured array of dtype `numpy.dtype("u8,u8")` (fields f0, f1: the first and last 16 hex digits of
the 32-hex-digit uid, as unsigned 64-bit integers), sorted, saved with `numpy.save`. The resharder's
file is the subset to KEEP; the removal list uses the same format.
"""
from __future__ import annotations

import io
from typing import Iterable

import numpy as np

from pipeline.errors import BadInput

UID_DTYPE = np.dtype("u8,u8")


def uid_pairs(uids: Iterable[str]) -> np.ndarray:
    """Hex uid strings -> (f0, f1) rows in the given order; BadInput for a uid that is not 32 hex digits."""
    pairs = []
    for u in uids:
        if len(u) != 32:
            raise BadInput(f"uid {u!r} is not 32 hex digits (a DataComp uid)")
        try:
            pairs.append((int(u[:16], 16), int(u[16:], 16)))
        except ValueError:
            raise BadInput(f"uid {u!r} is not 32 hex digits (a DataComp uid)") from None
    return np.array(pairs, dtype=UID_DTYPE)


def sorted_uids(arr: np.ndarray) -> np.ndarray:
    """(f0, f1) rows sorted as DataComp's resharder expects (by the 128-bit value)."""
    return np.sort(arr, order=("f0", "f1"))


def uid_array(uids: Iterable[str]) -> np.ndarray:
    """Hex uid strings -> the sorted (f0, f1) array of a uid list file."""
    return sorted_uids(uid_pairs(uids))


def uid_strings(arr: np.ndarray) -> list[str]:
    """The array back to hex uid strings, in its order."""
    return [f"{int(a):016x}{int(b):016x}" for a, b in zip(arr["f0"], arr["f1"])]


def npy_bytes(arr: np.ndarray) -> bytes:
    """`arr` as the bytes of a `.npy` file."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
