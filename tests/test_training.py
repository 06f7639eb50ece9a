import json

import numpy as np
import pytest

from pipeline.corpus.decode import load_sample_image
from pipeline.corpus.reader import iter_shard
from pipeline.dede.scorer import Scorer
from pipeline.dede.train import TrainConfig, train_decoder

TINY = dict(epochs=2, batch_size=16, model="tiny", holdout=0.25, progress=False, device="cpu")


def test_train_save_load_score_round_trip(tmp_path, small_shards):
    out = str(tmp_path / "dec")
    cfg = train_decoder(TrainConfig(encoder="resnet:resnet18-cifar-w0.125", data=[str(tmp_path / "shards")], out=out, **TINY))
    assert cfg.data.n_train + cfg.data.n_holdout == 120
    assert len(cfg.training.loss_history) == 2 and cfg.model.width == 32 and cfg.model.victim_dim == 64
    saved = json.load(open(f"{out}/config.json"))
    assert saved["weights_sha256"] and saved["calibration"]["n"] == cfg.data.n_holdout
    assert saved["training"]["subset"] == cfg.training.subset == "hash"
    scorer = Scorer(out, device="cpu")
    samples = list(iter_shard(small_shards[0]))[:8]
    imgs = np.stack([load_sample_image(s.fields, scorer.work_size) for s in samples])
    keys = [s.key for s in samples]
    a, b = scorer.score(imgs, keys), scorer.score(imgs, keys)
    assert a.scores.shape == (8,) and a.embeddings.shape == (8, 64) and a.embeddings.dtype == np.float16
    np.testing.assert_array_equal(a.scores, b.scores)          # same key -> same mask -> same score
    single = scorer.score(imgs[:1], keys[:1]).scores[0]
    assert single == pytest.approx(a.scores[0], rel=1e-4)       # a sample's score does not depend on its batch
    assert scorer.threshold("fpr:0.01") >= scorer.threshold("fpr:0.5")
    assert scorer.decoder_sha256 == saved["weights_sha256"]


def test_resume_continues_where_it_stopped(tmp_path, small_shards):
    data = [str(tmp_path / "shards")]
    kw = {**TINY, "schedule": "constant", "warmup_epochs": 0}
    enc = "resnet:resnet18-cifar-w0.125"
    full = train_decoder(TrainConfig(encoder=enc, data=data, out=str(tmp_path / "a"), **{**kw, "epochs": 3}))
    train_decoder(TrainConfig(encoder=enc, data=data, out=str(tmp_path / "b"), **{**kw, "epochs": 1}))
    resumed = train_decoder(TrainConfig(encoder=enc, data=data, out=str(tmp_path / "b"), resume=True, **{**kw, "epochs": 3}))
    np.testing.assert_allclose(resumed.training.loss_history, full.training.loss_history, rtol=1e-5)
    assert resumed.weights_sha256 == full.weights_sha256


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shard at"):
        train_decoder(TrainConfig(encoder="resnet:resnet18-cifar-w0.125", data=[str(tmp_path / "nope.tar")],
                                  out=str(tmp_path / "o"), **TINY))


def test_holdout_is_chosen_by_sample_key_and_is_big_enough_for_a_1pct_quantile():
    from pipeline.dede.train import MIN_HOLDOUT, QUANTILE_HOLDOUT, split_holdout

    keys = [f"{i:06d}" for i in range(50000)]
    train, hold = split_holdout(keys, 0.1, 10000)
    assert len(hold) == 5000 and len(train) == 45000 and not set(train) & set(hold)
    shuffled = keys[::-1]                    # shards read in another order (or moved): same members
    _, hold2 = split_holdout(shuffled, 0.1, 10000)
    assert {shuffled[i] for i in hold2} == {keys[i] for i in hold}
    _, lab = split_holdout(keys[:10000], 0.1, 10000)
    assert len(lab) == QUANTILE_HOLDOUT      # 10% of 10,000 would put a 1% quantile on 10 samples
    _, quarter = split_holdout(keys[:4000], 0.1, 10000)
    assert len(quarter) == 1000              # a smaller set keeps three quarters to train on
    _, small = split_holdout(keys[:600], 0.05, 10000)
    assert len(small) == MIN_HOLDOUT         # 5% of 600 would be 30: too few for a 1% rate
    train3, hold3 = split_holdout(keys[:10], 0.05, 10000)
    assert len(hold3) == 5 and len(train3) == 5


def test_max_samples_takes_the_lowest_key_hashes_over_every_shard(tmp_path, small_shards):
    """--max-samples is a uniform subset whatever the shard order: the N of lowest key hash, not the first N."""
    from pipeline.corpus.reader import iter_shard
    from pipeline.dede.train import load_auxiliary
    from pipeline.encoders import create_encoder
    from pipeline.errors import BadInput
    from pipeline.keyhash import key_hash

    every = [s.key for shard in small_shards for s in iter_shard(shard)]
    encoder = create_encoder("resnet:resnet18-cifar-w0.125", device="cpu")
    base = dict(encoder="resnet:resnet18-cifar-w0.125", data=[str(tmp_path / "shards")], out=str(tmp_path / "d"),
                max_samples=30, **TINY)
    lowest = load_auxiliary(TrainConfig(**base), encoder)
    assert lowest.keys == sorted(every, key=key_hash)[:30] and len(lowest.images) == len(lowest.embeddings) == 30
    assert {every.index(k) // 40 for k in lowest.keys} == {0, 1, 2}              # drawn from every shard
    first = load_auxiliary(TrainConfig(**{**base, "subset": "first"}), encoder)
    assert first.keys == every[:30]
    with pytest.raises(BadInput, match="subset"):
        TrainConfig(**{**base, "subset": "random"})
    for bad in (-0.1, 0.5):
        with pytest.raises(BadInput, match="trim"):
            TrainConfig(**{**base, "trim": bad})


def test_a_larger_encoder_gets_a_decoder_at_its_own_resolution(tmp_path, small_shards):
    """A 224 px encoder (torchvision ResNet-18, random init): the decoder works at 224 px with 16 px patches
    (196 of them), recorded in config.json, and scores 224 px images; --image-size keeps the preset's."""
    data = [str(tmp_path / "shards")]
    tiny = {**TINY, "epochs": 1, "max_samples": 40}
    cfg = train_decoder(TrainConfig(encoder="resnet:resnet18", data=data, out=str(tmp_path / "big"), **tiny))
    assert (cfg.model.image_size, cfg.model.patch_size, cfg.model.num_patches) == (224, 16, 196)
    saved = json.load(open(tmp_path / "big" / "config.json"))["model"]
    assert (saved["image_size"], saved["patch_size"]) == (224, 16)
    scorer = Scorer(str(tmp_path / "big"), device="cpu")
    assert scorer.work_size == scorer.image_size == 224
    samples = list(iter_shard(small_shards[0]))[:2]
    out = scorer.score(np.stack([load_sample_image(s.fields, 224) for s in samples]), [s.key for s in samples])
    assert np.isfinite(out.scores).all() and (out.difficulty > 0).all()
    kept = train_decoder(TrainConfig(encoder="resnet:resnet18", data=data, out=str(tmp_path / "small"),
                                     match_encoder=False, **tiny))
    assert (kept.model.image_size, kept.model.patch_size) == (32, 4)
