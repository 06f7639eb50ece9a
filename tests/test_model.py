import pytest
import torch

from pipeline.dede.model import DeDe, DeDeConfig, create_dede, masked_mse, masked_sse
from pipeline.dede.scorer import key_noise
from pipeline.errors import BadInput


def small(**kw) -> DeDe:
    return create_dede("tiny", victim_dim=16, **kw)


@pytest.mark.parametrize("size,patch,ratio,visible", [(32, 4, 0.9, 6), (32, 4, 0.99, 0), (32, 4, 0.75, 16), (64, 8, 0.5, 32)])
def test_shapes_and_visible_count(size, patch, ratio, visible):
    m = small(image_size=size, patch_size=patch)
    x, v = torch.randn(3, 3, size, size), torch.randn(3, 16)
    pred, mask = m(x, v, ratio)
    assert pred.shape == (3, 3, size, size)
    assert mask.shape == (3, 1, size, size)
    assert m.num_visible(ratio) == visible
    hidden_patches = mask[:, 0, ::patch, ::patch].sum(dim=(1, 2))
    assert torch.all(hidden_patches == (size // patch) ** 2 - visible)


def test_mask_is_deterministic_by_key_and_differs_between_keys():
    a, b = key_noise(["x/1", "x/2"], 64), key_noise(["x/1", "x/2"], 64)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    m = small().eval()
    x, v = torch.randn(2, 3, 32, 32), torch.randn(2, 16)
    with torch.no_grad():
        p1, m1 = m(x, v, 0.9, key_noise(["k1", "k2"], 64))
        p2, m2 = m(x, v, 0.9, key_noise(["k1", "k2"], 64))
        _, m3 = m(x, v, 0.9, key_noise(["k3", "k4"], 64))
    assert torch.equal(m1, m2) and torch.equal(p1, p2)
    assert not torch.equal(m1, m3)


def test_visible_patches_reach_the_decoder_and_embedding_matters():
    m = small().eval()
    x, v = torch.randn(1, 3, 32, 32), torch.randn(1, 16)
    noise = key_noise(["k"], 64)
    with torch.no_grad():
        base, _ = m(x, v, 0.99, noise)
        other_v, _ = m(x, v * 3, 0.99, noise)
    assert not torch.allclose(base, other_v)


def test_loss_and_score_arithmetic():
    pred = torch.zeros(2, 3, 4, 4)
    img = torch.ones(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1  # half the pixels hidden
    assert masked_sse(pred, img, mask).tolist() == [24.0, 24.0]   # 3 channels x 8 hidden pixels
    assert masked_mse(pred, img, mask).item() == pytest.approx(1.0)


def test_trimmed_loss_leaves_out_the_worst_images_only():
    img = torch.zeros(10, 3, 4, 4)
    pred = torch.full((10, 3, 4, 4), 0.5)
    pred[3] = 10.0                                                 # one image the decoder cannot reconstruct
    mask = torch.ones(10, 1, 4, 4)
    assert masked_mse(pred, img, mask, trim=0.0).item() == pytest.approx((9 * 0.25 + 100) / 10)
    assert masked_mse(pred, img, mask, trim=0.1).item() == pytest.approx(0.25)   # the outlier leaves the gradient
    grad = pred.clone().requires_grad_()
    masked_mse(grad, img, mask, trim=0.1).backward()
    assert grad.grad[3].abs().sum() == 0 and grad.grad[0].abs().sum() > 0
    assert masked_mse(pred[:1], img[:1], mask[:1], trim=0.4).item() == pytest.approx(0.25)   # never empty


def test_bad_config_errors():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        DeDe(DeDeConfig(victim_dim=4, image_size=30, patch_size=4))
    with pytest.raises(ValueError, match="divisible"):
        DeDe(DeDeConfig(victim_dim=4, width=10, encoder_heads=3))
    with pytest.raises(ValueError, match="victim_dim is not set"):
        create_dede("tiny")
    for ratio in (1.5, -0.1, float("nan")):
        with pytest.raises(BadInput, match=r"--train-mask-ratio must be in \[0, 1\]"):
            DeDeConfig.preset("small", train_mask_ratio=ratio)
    assert DeDeConfig.preset("small", test_mask_ratio=1.0).test_mask_ratio == 1.0


def test_at_resolution_keeps_a_decoder_small_beside_a_larger_encoder():
    from pipeline.dede.model import MAX_TOKENS, at_resolution, dede_paper, dede_small

    assert at_resolution(dede_paper(), 32) == dede_paper()                      # CIFAR: the preset as it is
    assert (at_resolution(dede_paper(), 224).image_size, at_resolution(dede_paper(), 224).patch_size) == (224, 16)
    assert at_resolution(dede_small(), 224).patch_size == 16
    for size in (64, 96, 160, 224, 256, 336):
        cfg = at_resolution(dede_paper(), size)
        assert size % cfg.patch_size == 0 and cfg.num_patches <= MAX_TOKENS and cfg.patch_size >= 4, cfg
        smaller = [p for p in range(4, cfg.patch_size) if size % p == 0]
        assert all((size // p) ** 2 > MAX_TOKENS for p in smaller)             # the smallest patch that fits
