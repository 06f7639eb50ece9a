"""The demo (jobs/demo.py, pipeline/lab/demo.py): the committed encoder is checked against its card, and
a tiny run goes end to end (fine-tune, corpus, decoder, scoring job, report) and prints its three lines."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from pipeline.checkpoints import sha256_bytes
from pipeline.corpus.cifar import archive_path
from pipeline.errors import BadInput
from pipeline.lab.demo import DEMO_ENCODER, FLAG_BY, DemoConfig, checked_encoder, run_demo

ROOT = Path(__file__).resolve().parents[2]


def demo_main():
    spec = importlib.util.spec_from_file_location("demo_script_under_test", ROOT / "jobs" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_the_committed_encoder_matches_its_card():
    card = json.loads((DEMO_ENCODER.parent / "card.json").read_text())
    data = DEMO_ENCODER.read_bytes()
    assert len(data) <= 2 * 1024 * 1024
    assert sha256_bytes(data) == card["weights_sha256"]
    assert card["command"].startswith("jobs/lab_simclr.py")
    assert checked_encoder(DEMO_ENCODER) == f"lab:simclr-r18@{DEMO_ENCODER.resolve()}"


def test_a_modified_encoder_is_refused_in_one_line(tmp_path, capsys):
    folder = tmp_path / "enc"
    shutil.copytree(DEMO_ENCODER.parent, folder)
    weights = folder / DEMO_ENCODER.name
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="does not match"):
        checked_encoder(weights)
    out = tmp_path / "out"
    assert demo_main()(["--encoder", str(weights), "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "demo encoder" in err[0] and "does not match" in err[0], err
    assert not out.exists()


@pytest.mark.skipif(not archive_path().exists(), reason="the CIFAR-10 archive (../shared/data/cifar10) is not present")
def test_a_tiny_demo_runs_end_to_end(tiny_cache, tmp_path):
    lines: list[str] = []
    result = run_demo(DemoConfig(out=str(tmp_path / "demo"), corpus_size=100, aux_samples=200, epochs=1,
                                 finetune_epochs=1, shadow=128, preset="tiny", device="cpu", progress=False),
                      log=lines.append)
    verdict, report, numbers = lines[-3:]
    assert verdict.startswith(("backdoor activity", "no evidence of backdoor activity")) and verdict == result.verdict
    assert report == f"report: {result.report}" and Path(result.report).is_file()
    assert numbers.startswith("AUC ") and "TPR " in numbers and "FPR " in numbers
    assert 0.0 <= result.metrics["auc"] <= 1.0
    assert (tmp_path / "demo" / "encoder" / "model.safetensors").is_file()
    run = json.loads((tmp_path / "demo" / "run" / "run.json").read_text())
    assert run["flag_by"] == FLAG_BY and run["config"]["carry_fields"] == ["poisoned"]
