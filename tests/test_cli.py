import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_train_decoder_bad_input_is_one_line(tmp_path):
    r = run("jobs/train_decoder.py", "--encoder", "vgg:vgg16", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown encoder kind 'vgg'" in r.stderr
    r = run("jobs/train_decoder.py", "--encoder", "resnet:resnet18-cifar-w0.125", "--data", str(tmp_path / "none"),
            "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no shard at" in r.stderr
    r = run("jobs/train_decoder.py", "--encoder", "resnet:resnet18-cifar-w0.125", "--data", str(tmp_path),
            "--out", str(tmp_path / "o"), "--preset", "huge")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--preset" in r.stderr


def test_ingest_and_train_cli(tmp_path, cifar_test_samples):
    r = run("jobs/ingest.py", "cifar10", "--split", "test", "--limit", "64", "--shard-size", "32", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["000000.tar", "000001.tar"]
    r = run("jobs/train_decoder.py", "--encoder", "resnet:resnet18-cifar-w0.125", "--data", str(tmp_path / "s/{000000..000001}.tar"),
            "--out", str(tmp_path / "d"), "--epochs", "1", "--batch-size", "16", "--preset", "tiny", "--patch-size", "8",
            "--holdout", "0.25", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d" / "model.safetensors").exists()
    model = json.loads((tmp_path / "d" / "config.json").read_text())["model"]
    assert (model["width"], model["encoder_depth"], model["encoder_heads"], model["patch_size"]) == (32, 1, 2, 8)
    r = run("jobs/ingest.py", "folder", str(tmp_path / "empty"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2
