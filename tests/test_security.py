"""Repository-wide safety rules that must never regress."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("pipeline", "jobs", "bench", "tests") for p in (ROOT / d).rglob("*.py")]


def test_every_torch_load_is_weights_only():
    offenders = []
    for p in SOURCES:
        for m in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", p.read_text()):
            if "weights_only=True" not in m.group(0):
                offenders.append(f"{p.relative_to(ROOT)}: {m.group(0)[:80]}")
    assert not offenders, offenders


def test_no_pickle_in_library():
    for p in (ROOT / "pipeline").rglob("*.py"):
        assert not re.search(r"^\s*import pickle|pickle\.loads?\(", p.read_text(), re.M), p
