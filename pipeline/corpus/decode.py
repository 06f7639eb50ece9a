"""Safe image decoding: decompression-bomb guard, EXIF orientation, every mode to 8-bit RGB."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pnm")
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class DecodeError(Exception):
    """A sample whose image cannot be used; str() is `kind: detail`."""


def image_bytes(fields: dict[str, bytes]) -> bytes:
    """The bytes of the sample's image member (first known suffix), or DecodeError('missing: ...')."""
    for suf in IMAGE_SUFFIXES:
        if suf in fields:
            if not fields[suf]:
                raise DecodeError(f"decode: zero-byte {suf} member")
            return fields[suf]
    raise DecodeError("missing: no image member")


def caption(fields: dict[str, bytes]) -> str | None:
    """The `.txt` caption; undecodable UTF-8 bytes become U+FFFD rather than an error."""
    data = fields.get("txt")
    return None if data is None else data.decode("utf-8", errors="replace")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB")


def decode_image(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Bytes -> upright RGB PIL image. `draft_size` lets JPEG decode at reduced scale when the image
    is much larger than needed. Raises DecodeError with `decode: ...` or `bomb: ...`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"bomb: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a per-sample error, never a crash
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DecodeError(f"decode: {msg}") from None


def resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side to `size`, centre crop -> (size, size, 3) uint8."""
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_sample_image(fields: dict[str, bytes], size: int) -> np.ndarray:
    """A sample's image as (size, size, 3) uint8, or DecodeError naming why not."""
    return resize_center_crop(decode_image(image_bytes(fields), draft_size=size), size)
