import io

import pytest
import torch
from safetensors.torch import save_file

from pipeline.checkpoints import load_state_dict
from pipeline.encoders import create_encoder, parse_spec
from pipeline.models.resnet_cifar import CifarResNet


def test_spec_parsing_and_errors(tmp_path):
    s = parse_spec("resnet:resnet18-cifar@s3://b/k.safetensors")
    assert (s.kind, s.name, s.checkpoint) == ("resnet", "resnet18-cifar", "s3://b/k.safetensors")
    assert str(s) == "resnet:resnet18-cifar@s3://b/k.safetensors"
    with pytest.raises(ValueError, match="expected KIND:NAME"):
        parse_spec("resnet18")
    with pytest.raises(ValueError, match="unknown encoder kind 'vgg'"):
        parse_spec("vgg:vgg16")
    with pytest.raises(ValueError, match="unknown resnet"):
        create_encoder("resnet:resnet18-imagenet", "cpu")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        create_encoder(f"resnet:resnet18-cifar-w0.25@{tmp_path}/none.safetensors", "cpu")
    with pytest.raises(ValueError, match="unknown lab encoder"):
        create_encoder("lab:does-not-exist", "cpu")


def test_cifar_resnet_embeds_frozen_on_uint8():
    enc = create_encoder("resnet:resnet18-cifar-w0.25", "cpu")
    assert (enc.embed_dim, enc.input_size) == (128, 32)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.backbone.training
    imgs = torch.randint(0, 256, (2, 40, 40, 3), dtype=torch.uint8)  # resized to 32 by its preprocessing
    out = enc.embed(imgs)
    assert out.shape == (2, 128) and torch.isfinite(out).all()


def test_checkpoint_round_trip_safetensors_and_weights_only(tmp_path):
    net = CifarResNet("resnet18", 0.25)
    st = tmp_path / "enc.safetensors"
    save_file({f"backbone.{k}": v for k, v in net.state_dict().items()}, str(st))
    enc = create_encoder(f"resnet:resnet18-cifar-w0.25@{st}", "cpu")
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    ref = create_encoder("resnet:resnet18-cifar-w0.25", "cpu")
    ref.backbone.load_state_dict(net.state_dict())
    assert torch.allclose(enc.embed(x), ref.embed(x))
    assert len(enc.checkpoint_sha256) == 64
    pt = tmp_path / "enc.pt"
    torch.save({"state_dict": net.state_dict()}, pt)
    enc2 = create_encoder(f"resnet:resnet18-cifar-w0.25@{pt}", "cpu")
    assert torch.allclose(enc2.embed(x), enc.embed(x))


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_state_dict(str(p))


def test_shape_mismatch_is_one_clear_line(tmp_path):
    st = tmp_path / "wide.safetensors"
    save_file(CifarResNet("resnet18", 0.5).state_dict(), str(st))
    with pytest.raises(ValueError, match="does not fit resnet:resnet18-cifar-w0.25") as e:
        create_encoder(f"resnet:resnet18-cifar-w0.25@{st}", "cpu")
    assert "\n" not in str(e.value)


def test_openclip_random_init_and_checkpoint(tmp_path):
    enc = create_encoder("openclip:RN50", "cpu")
    assert enc.input_size == 224 and enc.embed_dim == 1024
    x = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    out = enc.embed(x)
    assert out.shape == (1, 1024)
    st = tmp_path / "clip.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in enc.backbone.visual.state_dict().items()}, str(st))
    enc2 = create_encoder(f"openclip:RN50@{st}", "cpu")
    assert torch.allclose(enc2.embed(x), out, atol=1e-5)
    with pytest.raises(ValueError, match="unknown open_clip model"):
        create_encoder("openclip:NoSuchNet", "cpu")


def test_random_init_is_the_same_in_every_process():
    import subprocess
    import sys

    code = ("import torch; from pipeline.encoders import create_encoder; "
            "e = create_encoder('resnet:resnet18-cifar-w0.125', 'cpu'); "
            "print(float(sum(p.double().sum() for p in e.parameters())))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(runs) == 1
    a = create_encoder("resnet:resnet18-cifar-w0.125", "cpu")
    torch.manual_seed(99)
    b = create_encoder("resnet:resnet18-cifar-w0.125", "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_lab_specs_load_through_the_plugin_entry_point_without_importing_the_lab_first():
    import subprocess
    import sys

    code = ("import sys; from pipeline.encoders import create_encoder; assert 'pipeline.lab' not in sys.modules; "
            "e = create_encoder('lab:simclr-r18', 'cpu'); print(e.embed_dim, 'pipeline.lab' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["512", "True"]


def test_register_encoder_by_kind_and_by_name():
    from pipeline.encoders import CIFAR_MEAN, CIFAR_STD, Encoder, register_encoder

    @register_encoder("toy")
    def toy(spec):
        return Encoder(torch.nn.Flatten(), spec, 3 * 32 * 32, 32, CIFAR_MEAN, CIFAR_STD)

    @register_encoder("toy", "special")
    def special(spec):
        return Encoder(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), spec, 3, 32,
                       CIFAR_MEAN, CIFAR_STD)

    assert create_encoder("toy:anything", "cpu").embed_dim == 3072
    enc = create_encoder("toy:special", "cpu")
    assert enc.embed(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)).shape == (1, 3)


def test_checkpoint_state_strips_the_first_prefix_present(tmp_path):
    from pipeline.encoders import checkpoint_state

    st = tmp_path / "m.safetensors"
    save_file({"backbone.w": torch.zeros(1), "head.w": torch.ones(1)}, str(st))
    sd, sha = checkpoint_state(parse_spec(f"resnet:resnet18-cifar@{st}"), ("visual.", "backbone."))
    assert list(sd) == ["w"] and len(sha) == 64
    assert checkpoint_state(parse_spec("resnet:resnet18-cifar")) == ({}, None)


def test_device_auto_and_bad_devices_are_one_line_bad_input():
    from pipeline.encoders import resolve_device
    from pipeline.errors import BadInput

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(BadInput, match="unknown device"):
        resolve_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="no CUDA device"):
            resolve_device("cuda")
