"""The lab's encoders load from the checkpoints the lab writes; the lab CLIs' defaults are the library's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.encoders import create_encoder
from pipeline.errors import BadInput
from pipeline.lab.clip_model import CLIP_MODEL, CONFIG_FILE, create_clip
from pipeline.lab.compute import setup
from pipeline.lab.simclr import SimCLRNet
from pipeline.lab.triggers import TRIGGERS, checker_trigger, load_trigger, trigger_hash


def test_clip_tiny_loads_a_whole_clip_checkpoint(tmp_path):
    model = create_clip()
    st = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st))
    enc = create_encoder(f"lab:clip-tiny@{st}", "cpu")
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        ref = model.visual.eval()(enc.preprocess(x))
    assert torch.allclose(enc.embed(x), ref, atol=1e-5)
    assert CONFIG_FILE.stem == CLIP_MODEL and CONFIG_FILE.exists()


def test_simclr_width_is_read_from_the_checkpoint_and_misfits_are_one_line(tmp_path):
    st = tmp_path / "simclr.safetensors"
    save_file(SimCLRNet(0.125).state_dict(), str(st))
    assert create_encoder(f"lab:simclr-r18@{st}", "cpu").embed_dim == 64
    bad = tmp_path / "clip.safetensors"
    save_file({"visual.x": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="does not fit lab:simclr-r18") as e:
        create_encoder(f"lab:simclr-r18@{bad}", "cpu")
    assert "\n" not in str(e.value)


def test_setup_refuses_cuda_where_none_is_visible():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(BadInput, match="no CUDA device"):
        setup("cuda", None)
    assert setup("auto", None) == torch.device("cpu")


def test_lab_trigger_cli_writes_the_attacks_trigger_by_default(tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "jobs" / "lab_trigger.py"
    spec = importlib.util.spec_from_file_location("lab_trigger_cli", script)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    for kind, fn in TRIGGERS.items():
        out = tmp_path / f"{kind}.npz"
        assert cli.main([kind, "--out", str(out)]) == 0
        assert trigger_hash(load_trigger(out)) == trigger_hash(fn())
    out = tmp_path / "small.npz"
    assert cli.main(["checker", "--size", "4", "--start", "2", "--out", str(out)]) == 0
    assert np.array_equal(load_trigger(out).mask, checker_trigger(4, 2).mask)
