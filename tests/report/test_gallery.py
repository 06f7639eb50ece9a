"""The gallery: samples read back from their source shards, each beside its reconstruction
(`Scorer.reconstruct`, the same key-seeded masks as `Scorer.score`)."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.corpus.decode import load_sample_image
from pipeline.dede.scorer import Scorer, decoder_pixels
from pipeline.report.gallery import render_tiles
from tests.report.runs import png


def test_reconstruction_is_what_the_score_measures(tiny_decoder, cifar_test_samples):
    scorer = Scorer(tiny_decoder, device="cpu")
    fields = [f for _, f in cifar_test_samples[:8]]
    keys = [k for k, _ in cifar_test_samples[:8]]
    images = np.stack([load_sample_image(f, scorer.work_size) for f in fields])
    recon = scorer.reconstruct(images, keys)
    assert recon.shape == (8, scorer.image_size, scorer.image_size, 3) and recon.dtype == np.uint8
    target = decoder_pixels(torch.from_numpy(images), scorer.image_size, scorer.pixel_mean, scorer.pixel_std)
    pred = decoder_pixels(torch.from_numpy(recon), scorer.image_size, scorer.pixel_mean, scorer.pixel_std)
    sse = ((pred - target) ** 2).flatten(1).sum(1).numpy()      # mask 0.99 of 32 px: every patch hidden
    scores = scorer.score(images, keys).scores
    assert np.allclose(sse, scores, rtol=0.01), (sse, scores)        # uint8 rounding and the [0, 1] clamp


def test_tiles_read_back_from_shards_and_name_what_is_missing(tmp_path, tiny_decoder):
    from pipeline.corpus.ingest import write_shards

    url = write_shards(iter([(f"k{i}", {"png": png(i, 32)}) for i in range(5)]), str(tmp_path), shard_size=5)[0]
    rows = [{"key": "k3", "shard": url, "index": 3, "score": 9.0, "flagged": True},
            {"key": "k9", "shard": url, "index": 9, "score": 1.0, "flagged": False},
            {"key": "zz", "shard": url, "index": 1, "score": 1.0, "flagged": False},
            {"key": "k0", "shard": str(tmp_path / "gone.tar"), "index": 0, "score": 1.0, "flagged": False}]
    tiles = render_tiles(rows, Scorer(tiny_decoder, device="cpu"))
    assert tiles[0]["image"].startswith("data:image/png;base64,") and tiles[0]["reconstruction"]
    assert tiles[0]["problem"] is None
    assert [t["image"] for t in tiles[1:]] == [None] * 3
    assert tiles[1]["problem"] == "not found in the source shard"
    assert "changed" in tiles[2]["problem"]
    assert tiles[3]["problem"].startswith("source shard unreadable")
    plain = render_tiles(rows[:1])
    assert plain[0]["image"] and plain[0]["reconstruction"] is None
