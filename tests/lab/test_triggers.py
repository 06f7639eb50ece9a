"""Trigger arithmetic: patches, blends, CTRL's DCT change and round trip, file formats."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.lab.triggers import (FrequencyTrigger, PatchTrigger, bar_trigger, blend_trigger, blockwise_dct, load_trigger,
                                   rgb_to_yuv, square_trigger, trigger_hash)


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_square_trigger_sets_rows_cols_21_to_30_white_and_keeps_the_rest():
    x = _images()
    y = square_trigger().apply_uint8(x)
    assert (y[:, 21:31, 21:31] == 255).all()
    outside = np.ones((32, 32), bool)
    outside[21:31, 21:31] = False
    assert (y[:, outside] == x[:, outside]).all()


def test_square_trigger_off_the_diagonal_whitens_its_rows_and_cols_and_keeps_the_default_hash():
    x = _images()
    y = square_trigger(size=6, start=24, col=2).apply_uint8(x)
    inside = np.zeros((32, 32), bool)
    inside[24:30, 2:8] = True
    assert (y[:, inside] == 255).all() and (y[:, ~inside] == x[:, ~inside]).all()
    assert trigger_hash(square_trigger(col=21)) == trigger_hash(square_trigger())


def test_bar_trigger_whitens_exactly_its_rows_and_cols():
    x = _images()
    y = bar_trigger(length=12, thickness=2, row=4, col=5).apply_uint8(x)
    inside = np.zeros((32, 32), bool)
    inside[4:6, 5:17] = True
    assert (y[:, inside] == 255).all() and (y[:, ~inside] == x[:, ~inside]).all()


def test_blend_is_convex_combination_of_image_and_pattern():
    t = blend_trigger(alpha=0.25, seed=3)
    x = _images(2)
    y = t.apply(torch.as_tensor(x).permute(0, 3, 1, 2).double() / 255)
    expect = 0.75 * x / 255 + 0.25 * t.pattern[None] / 255
    assert torch.allclose(y.permute(0, 2, 3, 1), torch.as_tensor(expect), atol=1e-6)


def test_patch_trigger_rejects_bad_shapes():
    with pytest.raises(ValueError):
        PatchTrigger(np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError):
        PatchTrigger(np.zeros((32, 32, 3), np.uint8), np.full((32, 32), 2.0, np.float32))


def test_ctrl_changes_exactly_the_chosen_chroma_coefficients_by_the_magnitude():
    t = FrequencyTrigger()
    x = torch.full((2, 3, 32, 32), 0.5, dtype=torch.float64) + 0.05 * torch.rand(2, 3, 32, 32, dtype=torch.float64)
    before = blockwise_dct(rgb_to_yuv(x * 255), 32)
    after = blockwise_dct(rgb_to_yuv(t.apply(x) * 255), 32)   # mid-grey images: no clamping happens
    diff = after - before
    expect = torch.zeros_like(diff)
    for ch in (1, 2):
        for r, c in ((15, 15), (31, 31)):
            expect[:, ch, r, c] = 100.0
    assert torch.allclose(diff, expect, atol=1e-6)


def test_ctrl_round_trip_without_trigger_is_identity_within_one_level():
    x = _images(8, seed=1)
    y = FrequencyTrigger(magnitude=0.0).apply_uint8(x)
    assert np.abs(y.astype(int) - x.astype(int)).max() <= 1


def test_ctrl_trigger_is_small_but_present_on_uint8():
    x = _images(4, seed=2)
    y = FrequencyTrigger().apply_uint8(x).astype(int)
    d = np.abs(y - x.astype(int))
    assert d.max() > 0 and d.mean() < 10


def test_files_round_trip_for_every_kind(tmp_path):
    for t in (square_trigger(), blend_trigger(0.2), FrequencyTrigger(magnitude=50)):
        t.save(tmp_path / "t.npz")
        back = load_trigger(tmp_path / "t.npz")
        assert type(back) is type(t) and trigger_hash(back) == trigger_hash(t)
        x = _images(2)
        assert (back.apply_uint8(x) == t.apply_uint8(x)).all()


def test_badencoder_npz_format_loads_as_the_same_patch(tmp_path):
    ref = square_trigger()
    t = ref.pattern[None].copy()
    tm = np.repeat((1 - ref.mask)[None, ..., None], 3, axis=-1).astype(np.uint8)
    np.savez(tmp_path / "trigger_pt_white_21_10_ap_replace.npz", t=t, tm=tm)
    back = load_trigger(tmp_path / "trigger_pt_white_21_10_ap_replace.npz")
    x = _images(2)
    assert (back.apply_uint8(x) == ref.apply_uint8(x)).all()
