"""Safe image decoding: a decode budget checked from the header (input pixels, aspect ratio, pixels
after resizing), PIL's decompression-bomb guard, EXIF orientation, every mode to 8-bit RGB."""
from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import one_line

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pnm")
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Longer side / shorter side: panoramas and banners stay well below; a 1 x 1,000,000 strip would be
# resized to size x (size * 1,000,000) pixels.
MAX_ASPECT = 50.0
# Pixels of the image after its shorter side is resized to the work size (before the centre crop).
MAX_RESIZED_PIXELS = 16_000_000
_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")


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


def error_text(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), object addresses
    (`at 0x7f...`) removed, so the same bad input always gives the same text."""
    if isinstance(e, Image.UnidentifiedImageError):
        return "cannot identify image file"
    return _ADDRESS.sub("", one_line(e))


def _resized(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) once the shorter side is scaled to `size`."""
    s = size / min(width, height)
    return max(size, round(width * s)), max(size, round(height * s))


def check_budget(width: int, height: int, size: int | None = None, *, max_pixels: int = MAX_PIXELS,
                 max_aspect: float = MAX_ASPECT, max_resized_pixels: int = MAX_RESIZED_PIXELS) -> None:
    """Raise DecodeError (`bomb: ...` / `decode: ...`) when an image of this header size would cost
    too much to decode or to resize to `size`; cheap, so it runs before any pixel is decoded."""
    if width < 1 or height < 1:
        raise DecodeError(f"decode: image {width}x{height} has no pixels")
    if width * height > max_pixels:
        raise DecodeError(f"bomb: image {width}x{height} has {width * height} pixels, above the limit {max_pixels}")
    aspect = max(width, height) / min(width, height)
    if aspect > max_aspect:
        raise DecodeError(f"decode: image {width}x{height} has aspect ratio {aspect:.1f}:1, "
                          f"above the limit {max_aspect:g}:1")
    if size is not None:
        nw, nh = _resized(width, height, size)
        if nw * nh > max_resized_pixels:
            raise DecodeError(f"decode: image {width}x{height} resized to {nw}x{nh} has {nw * nh} pixels, "
                              f"above the limit {max_resized_pixels}")


def decode_image(data: bytes, draft_size: int | None = None, *, max_pixels: int = MAX_PIXELS,
                 max_aspect: float = MAX_ASPECT, max_resized_pixels: int = MAX_RESIZED_PIXELS) -> Image.Image:
    """Bytes -> upright RGB PIL image. `draft_size` is the size the image will be resized to: JPEG
    decodes at reduced scale when the image is much larger, and the budget (`check_budget`) covers
    the resize. Raises DecodeError with `decode: ...` or `bomb: ...`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_budget(*img.size, draft_size, max_pixels=max_pixels, max_aspect=max_aspect,
                         max_resized_pixels=max_resized_pixels)
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"bomb: {error_text(e)}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a per-sample error, never a crash
        raise DecodeError(f"decode: {error_text(e)}") from None


def resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side to `size`, centre crop -> (size, size, 3) uint8."""
    w, h = img.size
    nw, nh = _resized(w, h, size)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_sample_image(fields: dict[str, bytes], size: int, **budget: float) -> np.ndarray:
    """A sample's image as (size, size, 3) uint8, or DecodeError naming why not; `budget` takes
    `check_budget`'s limits (max_pixels, max_aspect, max_resized_pixels)."""
    return resize_center_crop(decode_image(image_bytes(fields), draft_size=size, **budget), size)
