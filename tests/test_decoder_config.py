"""The decoder folder: typed config.json checked against its schema, weights checked by sha256, presets."""
import copy
import json
import pickle
import shutil

import jsonschema
import numpy as np
import pytest
import torch

from pipeline.checkpoints import save_safetensors
from pipeline.dede.config import SCHEMA, DecoderConfig, load_decoder_config
from pipeline.schemas import load as load_schema
from pipeline.dede.model import PRESETS, DeDeConfig, create_dede, dede_paper, dede_small, dede_tiny
from pipeline.dede.scorer import Scorer
from pipeline.dede.store import check_decoder, load_decoder
from pipeline.dede.train import TrainConfig, train_decoder
from pipeline.errors import BadInput

ENCODER = "resnet:resnet18-cifar-w0.125"

# config.json exactly as the code before the typed config wrote it (tiny decoder, 64 CIFAR images;
# the calibration grid cut to three quantiles): it must keep loading.
TODAY = {
    "calibration": {"mean": 4816.101524353027, "n": 16, "paper_threshold": 4895.072265625, "q": [0.0, 0.5, 1.0],
                    "std": 2327.878858923194, "values": [1935.0550537109375, 4000.0, 9788.6421875]},
    "data": {"holdout_from_train": False, "inputs": ["/tmp/aux"], "n_holdout": 16, "n_train": 48, "skipped": {}},
    "encoder": {"checkpoint_sha256": None, "embed_dim": 64, "input_size": 32, "spec": ENCODER},
    "format": "dede-decoder/1",
    "model": {"decoder_depth": 1, "decoder_heads": 2, "encoder_depth": 1, "encoder_heads": 2, "image_size": 32,
              "mlp_ratio": 4.0, "patch_size": 4, "test_mask_ratio": 0.99, "train_mask_ratio": 0.9, "victim_dim": 64,
              "width": 32},
    "pixels": {"mean": [0.4914, 0.4822, 0.4465], "resize": "shorter-side+center-crop", "std": [0.2023, 0.1994, 0.201]},
    "training": {"batch_size": 16, "decoder_depth": 1, "device": "cpu", "encoder": ENCODER, "encoder_depth": 1,
                 "epochs": 1, "final_loss": 1.593448003133138, "heads": 2, "holdout": 0.25, "image_size": 32,
                 "loss_history": [1.593448003133138], "lr": 0.001, "max_holdout": 2000, "max_samples": None,
                 "minutes": 0.04, "patch_size": 4, "pixel_mean": [0.4914, 0.4822, 0.4465],
                 "pixel_std": [0.2023, 0.1994, 0.201], "schedule": "cosine", "seed": 0, "test_mask_ratio": 0.99,
                 "train_mask_ratio": 0.9, "warmup_epochs": 1.0, "weight_decay": 0.0001, "width": 32},
    "weights_sha256": "",
    "work_size": 32,
}


def write_folder(d, config: dict, seed: int = 0) -> str:
    """A decoder folder holding `config` and fresh tiny weights whose sha256 the config records."""
    torch.manual_seed(seed)
    sha = save_safetensors(create_dede(DeDeConfig(**config["model"])).state_dict(), str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({**config, "weights_sha256": sha}))
    return str(d)


@pytest.fixture
def today_dir(tmp_path):
    d = tmp_path / "today"
    d.mkdir()
    return write_folder(d, TODAY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_test_samples):
    """A folder written by train_decoder (tiny preset, one epoch on 48 CIFAR images)."""
    from pipeline.corpus.ingest import write_shards

    d = tmp_path_factory.mktemp("trained")
    write_shards(iter(cifar_test_samples[:48]), str(d / "aux"), shard_size=48)
    train_decoder(TrainConfig(encoder=ENCODER, data=[str(d / "aux")], out=str(d / "dec"), epochs=1, batch_size=16,
                              model="tiny", holdout=0.25, device="cpu", progress=False))
    return d


def test_trained_folder_matches_the_schema_and_round_trips(trained):
    raw = json.loads((trained / "dec" / "config.json").read_text())
    jsonschema.validate(raw, load_schema(SCHEMA))
    cfg = check_decoder(str(trained / "dec"))
    assert isinstance(cfg, DecoderConfig) and cfg.model == dede_tiny(victim_dim=64)
    assert cfg.encoder.spec == ENCODER and cfg.encoder.embed_dim == 64 and cfg.calibration.n == cfg.data.n_holdout
    assert DecoderConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict() == raw


def test_todays_folder_loads_and_scores(today_dir):
    model, cfg, sha = load_decoder(today_dir)
    assert cfg.model.width == 32 and cfg.training.epochs == 1 and cfg.pixels.mean == (0.4914, 0.4822, 0.4465)
    assert sha == cfg.weights_sha256 and not model.training
    scorer = Scorer(today_dir, device="cpu")
    assert scorer.threshold("paper") == pytest.approx(4895.072265625)
    assert scorer.threshold("fpr:0.5") == pytest.approx(4000.0)
    out = scorer.score(np.zeros((2, 32, 32, 3), np.uint8), ["a", "b"])
    assert out.scores.shape == (2,) and np.isfinite(out.scores).all()


def _drop(path: str):
    def f(c):
        *parents, last = path.split(".")
        for p in parents:
            c = c[p]
        del c[last]
    return f


def _set(path: str, value):
    def f(c):
        *parents, last = path.split(".")
        for p in parents:
            c = c[p]
        c[last] = value
    return f


@pytest.mark.parametrize("change,field", [
    (_drop("calibration"), "calibration"),
    (_set("calibration", [1, 2, 3]), "calibration"),
    (_set("calibration", "fpr"), "calibration"),
    (_set("calibration.q", [0.0, 1.0]), "calibration.values"),
    (_drop("calibration.paper_threshold"), "calibration.paper_threshold"),
    (_set("model.width", "32"), "model.width"),
    (_drop("model.victim_dim"), "model.victim_dim"),
    (_set("model.test_mask_ratio", 1.5), "model.test_mask_ratio"),
    (_set("model.depth", 3), "model"),
    (_drop("encoder"), "encoder"),
    (_set("encoder.embed_dim", None), "encoder.embed_dim"),
    (_set("pixels.std", [0.2, 0.2]), "pixels.std"),
    (_set("weights_sha256", "abc"), "weights_sha256"),
    (_set("format", "dede-decoder/2"), "format"),
    (_drop("training.loss_history"), "training.loss_history"),
])
def test_each_bad_config_is_one_line_naming_file_and_field(tmp_path, change, field):
    cfg = copy.deepcopy(TODAY)
    cfg["weights_sha256"] = "0" * 64
    change(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadInput) as e:
        load_decoder_config(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path}/config.json: field ") and field in msg, msg


def test_invalid_json_missing_config_and_a_file_for_a_folder(tmp_path, today_dir):
    (tmp_path / "config.json").write_text('{"format": ')
    with pytest.raises(BadInput, match=r"config.json is not valid JSON: "):
        load_decoder_config(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_decoder_config(str(tmp_path / "nothing"))
    with pytest.raises(BadInput, match="is not a folder"):
        check_decoder(f"{today_dir}/model.safetensors")


class Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').close()",))


@pytest.mark.parametrize("weights", ["other", "truncated", "pickle", "missing"])
def test_replaced_or_damaged_weights_are_refused(tmp_path, today_dir, weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "today" / "model.safetensors"
    if weights == "other":
        save_safetensors(create_dede(DeDeConfig(**TODAY["model"])).state_dict(), str(path))
    elif weights == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif weights == "pickle":
        path.write_bytes(pickle.dumps({"w": Evil()}))
    else:
        path.unlink()
    for load in (check_decoder, load_decoder, Scorer):
        with pytest.raises(BadInput) as e:
            load(today_dir)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg
        assert ("is missing" if weights == "missing" else "does not match config.json's weights_sha256") in msg
    assert not (tmp_path / "PWNED").exists()


def test_weights_that_do_not_fit_the_config_are_one_line(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    write_folder(d, TODAY)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["width"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadInput, match="do not fit config.json's model"):
        load_decoder(str(d))


def test_encoder_mismatch_and_refused_encoder_checkpoint(tmp_path, today_dir, monkeypatch):
    with pytest.raises(BadInput, match=r"gives 128-dim embeddings but decoder .* expects 64"):
        Scorer(today_dir, device="cpu", encoder_spec="resnet:resnet18-cifar-w0.25")
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "enc.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(BadInput) as e:
        Scorer(today_dir, device="cpu", encoder_spec=f"{ENCODER}@{evil}")
    assert "\n" not in str(e.value) and "cannot load encoder" in str(e.value)
    assert not (tmp_path / "PWNED").exists()


def test_malicious_train_state_is_refused_on_resume(tmp_path, trained, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "dec"
    shutil.copytree(trained / "dec", out)
    (out / "train_state.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(BadInput) as e:
        train_decoder(TrainConfig(encoder=ENCODER, data=[str(trained / "aux")], out=str(out), epochs=1, batch_size=16,
                                  model="tiny", holdout=0.25, device="cpu", progress=False, resume=True))
    assert "\n" not in str(e.value) and "refusing to resume" in str(e.value)
    assert not (tmp_path / "PWNED").exists()


def test_presets():
    assert set(PRESETS) == {"tiny", "small", "paper"}
    paper = DeDeConfig.preset("paper")
    assert paper == dede_paper() == DeDeConfig()
    assert (paper.width, paper.encoder_depth, paper.decoder_depth, paper.encoder_heads, paper.patch_size) == (192, 6, 4, 3, 4)
    small = dede_small()
    assert (small.width, small.encoder_depth, small.decoder_depth, small.decoder_heads, small.patch_size) == (128, 2, 2, 4, 8)
    tiny = DeDeConfig.preset("tiny", victim_dim=8)
    assert (tiny.width, tiny.encoder_depth, tiny.decoder_depth, tiny.encoder_heads, tiny.victim_dim) == (32, 1, 1, 2, 8)
    assert DeDeConfig.preset("small", width=96).width == 96 == dede_small(width=96).width
    assert create_dede("tiny", victim_dim=8).cfg == tiny == create_dede(dede_tiny(), victim_dim=8).cfg
    assert TrainConfig(encoder=ENCODER, data=[], out="", model="small").model == small
    assert TrainConfig(encoder=ENCODER, data=[], out="").model == paper
    with pytest.raises(BadInput, match="unknown decoder preset 'huge'; use one of tiny, small, paper"):
        DeDeConfig.preset("huge")


def test_clean_reference_is_saved_checked_and_optional(trained, tmp_path):
    from pipeline.dede.reference import REFERENCE, load_reference
    from pipeline.keyhash import key_hash

    dec = trained / "dec"
    cfg = check_decoder(str(dec))
    ref = load_reference(str(dec), cfg)
    assert cfg.reference.file == REFERENCE and cfg.reference.n_holdout == cfg.data.n_holdout == len(ref.holdout_scores)
    assert cfg.reference.n_bank == cfg.data.n_train == len(ref.bank_embeddings)        # all of them: under max_bank
    assert ref.holdout_scores.dtype == np.float32 and ref.bank_embeddings.dtype == ref.holdout_embeddings.dtype == np.float16
    assert ref.holdout_embeddings.shape == (cfg.data.n_holdout, 64)
    assert ref.holdout_difficulty.dtype == np.float32 and ref.holdout_difficulty.shape == (cfg.data.n_holdout,)
    assert (ref.holdout_difficulty > 0).all()                  # dede-rel's clean fit reads it
    np.testing.assert_allclose(np.quantile(ref.holdout_scores, 0.5), np.interp(0.5, cfg.calibration.q, cfg.calibration.values),
                               rtol=1e-5)
    from pipeline.dede.reference import bank_rows
    hashes = np.array([key_hash(k) for k in ["c", "a", "b", "d"]], np.uint64)
    assert list(bank_rows(hashes, np.array([0, 1, 2, 3]), 2)) == list(np.argsort(hashes)[:2])   # lowest hash first

    copy = tmp_path / "dec"
    shutil.copytree(dec, copy)
    (copy / REFERENCE).write_bytes((copy / REFERENCE).read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BadInput, match="does not match config.json's reference.sha256"):
        load_reference(str(copy), cfg)
    raw = json.loads((copy / "config.json").read_text())
    del raw["reference"]
    (copy / "config.json").write_text(json.dumps(raw))
    old = check_decoder(str(copy))                       # a decoder from before the reference still loads
    assert old.reference is None and old.to_dict() == raw
    with pytest.raises(BadInput, match="has no clean reference .* retrain the decoder"):
        load_reference(str(copy), old)
