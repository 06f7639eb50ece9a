"""The gallery: the top flagged samples and a few near the threshold, read back from their source
shards, each beside its DeDe reconstruction when a decoder is at hand."""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from pipeline.corpus.decode import DecodeError, load_sample_image
from pipeline.corpus.limits import Limits
from pipeline.corpus.reader import iter_shard
from pipeline.report.images import image_uri

if TYPE_CHECKING:
    from pipeline.dede.scorer import Scorer

DISPLAY_PX = 128
PREVIEW_PX = 224          # decode size without a decoder


def _read(tiles: list[dict], size: int, limits: Limits) -> dict[int, np.ndarray]:
    """Position in `tiles` -> its image at `size` px; a tile that cannot be read gets a `problem`."""
    wanted: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for pos, t in enumerate(tiles):
        wanted[t["shard"]][t["index"]].append(pos)
    images: dict[int, np.ndarray] = {}
    for url, by_index in wanted.items():
        left, lost = set(by_index), "not found in the source shard"
        for s in iter_shard(url, **limits.reader()):
            if s.key == "__tar__" and s.error:
                lost = f"source shard unreadable or cut short: {s.error}"
                break
            if s.index not in left:
                continue
            left.discard(s.index)
            for pos in by_index[s.index]:
                if s.key != tiles[pos]["key"]:
                    tiles[pos]["problem"] = f"the source shard changed: sample {s.index} is now {s.key!r}"
                    continue
                try:
                    images[pos] = load_sample_image(s.fields, size, **limits.decoder())
                except DecodeError as e:
                    tiles[pos]["problem"] = str(e)
            if not left:
                break
        for i in left:
            for pos in by_index[i]:
                tiles[pos]["problem"] = lost
    return images


def render_tiles(tiles: list[dict], scorer: Scorer | None = None, limits: Limits = Limits()) -> list[dict]:
    """`tiles` (key, shard, index, score, ...) with `image` and, given a `pipeline.dede.scorer.Scorer`,
    `reconstruction` data URIs added; `problem` says why a tile has no picture."""
    tiles = [{**t, "caption": t.get("caption"), "image": None, "reconstruction": None, "problem": None}
             for t in tiles]
    size = scorer.work_size if scorer is not None else PREVIEW_PX
    images = _read(tiles, size, limits)
    order = sorted(images)
    for pos in order:
        tiles[pos]["image"] = image_uri(images[pos], DISPLAY_PX)
    if scorer is not None and order:
        recon = scorer.reconstruct(np.stack([images[p] for p in order]), [tiles[p]["key"] for p in order])
        for pos, pixels in zip(order, recon):
            tiles[pos]["reconstruction"] = image_uri(pixels, DISPLAY_PX)
    return tiles
