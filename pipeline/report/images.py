"""Pictures for the report as inline `data:image/png;base64,...` URIs (the page makes no requests)."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def png_uri(data: bytes) -> str:
    """PNG bytes -> a data URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_uri(pixels: np.ndarray, size: int) -> str:
    """(H, W, 3) uint8 -> a data URI of the image scaled to `size` px (nearest neighbour when enlarging,
    so small images stay sharp)."""
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    resample = Image.NEAREST if img.width < size else Image.LANCZOS
    buf = io.BytesIO()
    img.resize((size, size), resample).save(buf, format="PNG", optimize=True)
    return png_uri(buf.getvalue())
