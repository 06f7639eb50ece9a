"""Triggers as data. A `Trigger` maps raw pixels (before any normalisation) to triggered pixels.

`PatchTrigger` is the generic mask/pattern trigger saved as .npz (`pattern` HxWx3 uint8, `mask` HxW
in [0, 1]): x' = (1 - mask) * x + mask * pattern covers patches (binary mask) and blends (mask alpha).
`FrequencyTrigger` is CTRL's: a fixed change of chroma DCT coefficients, saved with its parameters.
"""
from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# RGB -> YUV (kornia's rgb_to_yuv); the inverse is the exact matrix inverse so a round trip is lossless.
RGB2YUV = torch.tensor([[0.299, 0.587, 0.114], [-0.147, -0.289, 0.436], [0.615, -0.515, -0.100]],
                       dtype=torch.float64)
YUV2RGB = torch.linalg.inv(RGB2YUV)


class Trigger(ABC):
    """Common interface: `apply` on (B, 3, H, W) float in [0, 1], `apply_uint8` on (N, H, W, 3) uint8."""

    kind: str

    @abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Triggered copy of a [0, 1] batch (B, 3, H, W)."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that define the trigger (saved in its .npz)."""

    def apply_uint8(self, images: np.ndarray) -> np.ndarray:
        """Triggered copy of (N, H, W, 3) uint8 images, rounded back to uint8."""
        x = torch.as_tensor(images).permute(0, 3, 1, 2).double().div(255.0)
        y = self.apply(x).mul(255.0).round().clamp(0, 255).to(torch.uint8)
        return y.permute(0, 2, 3, 1).numpy()

    def save(self, path: str | Path) -> None:
        """Write the trigger as .npz with a `kind` field."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, kind=np.array(self.kind), **self.arrays())


class PatchTrigger(Trigger):
    """x' = (1 - mask) * x + mask * pattern on raw pixels."""

    kind = "patch"

    def __init__(self, pattern: np.ndarray, mask: np.ndarray):
        pattern, mask = np.asarray(pattern), np.asarray(mask, dtype=np.float32)
        if pattern.ndim != 3 or pattern.shape[2] != 3 or pattern.dtype != np.uint8:
            raise ValueError(f"pattern must be HxWx3 uint8, got {pattern.shape} {pattern.dtype}")
        if mask.shape != pattern.shape[:2] or mask.min() < 0 or mask.max() > 1:
            raise ValueError(f"mask must be HxW in [0, 1] matching the pattern, got {mask.shape}")
        self.pattern, self.mask = pattern, mask

    def arrays(self) -> dict[str, np.ndarray]:
        return {"pattern": self.pattern, "mask": self.mask}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.mask.shape:
            raise ValueError(f"trigger is {self.mask.shape}, images are {tuple(x.shape[-2:])}")
        m = torch.from_numpy(self.mask).to(x).view(1, 1, *self.mask.shape)
        p = torch.from_numpy(self.pattern).to(x).permute(2, 0, 1).unsqueeze(0) / 255.0
        return (1 - m) * x + m * p


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n x n): coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def blockwise_dct(x: torch.Tensor, window: int, inverse: bool = False) -> torch.Tensor:
    """2-D orthonormal DCT-II (or its inverse) of every window x window block of (B, C, H, W)."""
    b, c, h, w = x.shape
    d = dct_matrix(window).to(x)
    if inverse:
        d = d.T
    blocks = x.reshape(b, c, h // window, window, w // window, window).transpose(3, 4)
    out = d @ blocks @ d.T
    return out.transpose(3, 4).reshape(b, c, h, w)


def rgb_to_yuv(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", RGB2YUV.to(x), x)


def yuv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", YUV2RGB.to(x), x)


class FrequencyTrigger(Trigger):
    """CTRL: in YUV at [0, 255], add `magnitude` to DCT coefficients `positions` of chroma channels."""

    kind = "frequency"

    def __init__(self, window: int = 32, channels: tuple[int, ...] = (1, 2),
                 positions: tuple[tuple[int, int], ...] = ((15, 15), (31, 31)), magnitude: float = 100.0):
        self.window, self.channels, self.magnitude = int(window), tuple(int(c) for c in channels), float(magnitude)
        self.positions = tuple((int(r), int(c)) for r, c in positions)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"window": np.array(self.window), "channels": np.array(self.channels),
                "positions": np.array(self.positions), "magnitude": np.array(self.magnitude)}

    def perturb(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Add the magnitude at the chosen coefficients of every window of the chosen channels."""
        out = coeffs.clone()
        for ch in self.channels:
            for r, c in self.positions:
                out[:, ch, r::self.window, c::self.window] += self.magnitude
        return out

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        coeffs = blockwise_dct(rgb_to_yuv(x.double() * 255.0), self.window)
        y = yuv_to_rgb(blockwise_dct(self.perturb(coeffs), self.window, inverse=True))
        return (y / 255.0).clamp(0, 1).to(dtype)


def square_trigger(size: int = 10, start: int = 21, image: int = 32, value: int = 255,
                   col: int | None = None) -> PatchTrigger:
    """BadEncoder's patch: a `value` square of `size` px at rows start..start+size-1 and cols col..col+size-1
    (col defaults to start: on the diagonal)."""
    col = start if col is None else col
    return _solid(image, slice(start, start + size), slice(col, col + size), value)


def checker_trigger(size: int = 6, start: int = 25, image: int = 32) -> PatchTrigger:
    """A black/white checkerboard patch of `size` px at rows/cols start..start+size-1."""
    pattern = np.zeros((image, image, 3), np.uint8)
    mask = np.zeros((image, image), np.float32)
    ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    pattern[start:start + size, start:start + size] = (((ii + jj) % 2) * 255)[..., None].astype(np.uint8)
    mask[start:start + size, start:start + size] = 1
    return PatchTrigger(pattern, mask)


def bar_trigger(length: int = 16, thickness: int = 3, row: int = 1, col: int = 8, image: int = 32,
                value: int = 255) -> PatchTrigger:
    """A `value` horizontal bar of `thickness` x `length` px with its top-left corner at (row, col)."""
    return _solid(image, slice(row, row + thickness), slice(col, col + length), value)


def _solid(image: int, rows: slice, cols: slice, value: int) -> PatchTrigger:
    """A patch of one grey `value` over rows x cols of an `image`-px square."""
    pattern = np.zeros((image, image, 3), np.uint8)
    mask = np.zeros((image, image), np.float32)
    pattern[rows, cols] = value
    mask[rows, cols] = 1
    return PatchTrigger(pattern, mask)


def blend_trigger(alpha: float = 0.2, image: int = 32, seed: int = 0) -> PatchTrigger:
    """A full-image uniform-noise pattern blended with weight `alpha` (0.2: Chen et al. 2017's blended injection)."""
    rng = np.random.default_rng(seed)
    pattern = rng.integers(0, 256, (image, image, 3), dtype=np.uint8)
    return PatchTrigger(pattern, np.full((image, image), alpha, np.float32))


TRIGGERS: dict[str, Callable[..., Trigger]] = {
    "square": square_trigger,
    "checker": checker_trigger,
    "bar": bar_trigger,
    "blend": blend_trigger,
    "ctrl": FrequencyTrigger,
}
"""The named triggers: one name, one function, whose keyword defaults are that trigger's defaults."""


def load_trigger(path: str | Path) -> Trigger:
    """Read a trigger .npz: ours (`kind`), or BadEncoder's (`t` pattern, `tm` keep-mask)."""
    with np.load(path) as z:
        kind = str(z["kind"]) if "kind" in z else ("badencoder" if "t" in z else "patch")
        if kind == "frequency":
            return FrequencyTrigger(int(z["window"]), tuple(z["channels"].tolist()),
                                    tuple(map(tuple, z["positions"].tolist())), float(z["magnitude"]))
        if kind == "badencoder":
            t, tm = np.asarray(z["t"]), np.asarray(z["tm"])
            t, tm = t.reshape(t.shape[-3:]), tm.reshape(tm.shape[-3:])
            return PatchTrigger(t.astype(np.uint8), (1 - tm[..., 0]).astype(np.float32))
        if kind == "patch":
            return PatchTrigger(z["pattern"], z["mask"])
    raise ValueError(f"{path}: unknown trigger kind {kind!r}")


def trigger_hash(trigger: Trigger) -> str:
    """sha256 (first 16 hex) of a trigger's kind and defining arrays."""
    h = hashlib.sha256(trigger.kind.encode())
    for name, arr in sorted(trigger.arrays().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]
