"""Every CLI in jobs/ and bench/ keeps the one convention: `--help` exits 0, a bad flag exits 2 with
exactly one line on stderr and no traceback (checked in-process; one subprocess proves `python jobs/X.py`)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("jobs/*.py"), *ROOT.glob("bench/*.py")])
IDS = [p.relative_to(ROOT).as_posix() for p in SCRIPTS]


def load(script: Path) -> ModuleType:
    """Import a script as a module, its folder first on sys.path as under `python SCRIPT` (its
    `if __name__ == "__main__"` block does not run)."""
    name = "cli_contract_" + "_".join(script.relative_to(ROOT).with_suffix("").parts)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(script.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(script.parent))
    return module


def call(module: ModuleType, argv: list[str]) -> int:
    """main(argv); the convention returns the exit code and never exits the process itself."""
    try:
        return module.main(argv)
    except SystemExit as e:  # pragma: no cover - reported as a failure
        pytest.fail(f"main({argv}) raised SystemExit({e.code}) instead of returning the exit code")


def one_line_error(stderr: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr


def test_there_are_scripts_to_check():
    assert {"jobs/score_corpus.py", "jobs/lab_attack.py", "bench/throughput.py"} <= set(IDS)


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_convention_help_and_bad_flag(script, capsys):
    module = load(script)
    for fn in ("build_parser", "run", "main"):
        assert callable(getattr(module, fn, None)), f"{script.name} has no {fn}()"
    assert call(module, ["--help"]) == 0
    assert "usage:" in capsys.readouterr().out
    assert call(module, ["--no-such-flag"]) == 2
    one_line_error(capsys.readouterr().err)


def test_a_script_runs_as_python_jobs_x_py_without_installation():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = "jobs/lab_trigger.py"
    ok = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True)
    bad = subprocess.run([sys.executable, script, "--no-such-flag"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert ok.returncode == 0 and "usage:" in ok.stdout, ok.stderr
    assert bad.returncode == 2
    one_line_error(bad.stderr)
