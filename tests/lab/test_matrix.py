"""The reproduction matrix: the command on a tiny grid (cached: a rerun trains nothing), and the CLI's
defaults are the ones results/matrix.json was made with."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from jobs import lab_attack, lab_matrix
from pipeline.lab.matrix import BEGIN, END, GRID_TRIGGERS, TARGETS, TRIGGERS_BAR, holds, make_trigger, summary
from pipeline.lab.triggers import trigger_hash

TINY = "--epochs 1 --shadow 64 --batch-size 32 --references 3"
REPO = Path(__file__).resolve().parents[2]


def test_matrix_command_runs_a_tiny_grid_and_a_rerun_trains_nothing(tiny_simclr, tiny_cache, tmp_path, capsys):
    doc = tmp_path / "encoders.md"
    doc.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    out = tmp_path / "matrix.json"

    def argv(attacks: list[str], targets: list[str]) -> list[str]:
        return ["--clean", tiny_simclr, "--attacks", *attacks, "--triggers", "bar-top", "--targets", *targets,
                "--flags", TINY, "--trigger-dir", str(tmp_path / "triggers"), "--json", str(out), "--document", str(doc)]

    assert lab_matrix.main(argv(["badencoder", "drupe"], ["0", "3"])) == 0
    rows = json.loads(out.read_text())
    assert [(r["attack"], r["target"]) for r in rows] == [("badencoder", 0), ("badencoder", 3), ("drupe", 0), ("drupe", 3)]
    bar = trigger_hash(make_trigger("bar-top"))
    for r in rows:
        assert {"attack", "trigger", "target", "clean_accuracy", "attack_success_rate", "flags"} <= set(r)
        assert r["flags"] == shlex.split(TINY) and r["trigger"] == "bar-top"
        assert r["config"]["trigger"] == bar and r["config"]["target"] == r["target"] and r["config"]["epochs"] == 1
        assert 0 <= r["attack_success_rate"] <= 1 and r["clean_encoder_accuracy"] == 0.1
        assert r["holds"] == holds(r)
    text = doc.read_text()
    assert text.startswith(f"intro\n{BEGIN}\n") and text.endswith(f"{END}\noutro\n") and "\nold\n" not in text
    assert text.count("| bar-top") == 4 and "**not reproduced**" in text   # tiny runs carry flags
    assert f"Reproduction matrix (`{out.as_posix()}`;" in text               # the section names its JSON
    cards = {p: p.stat().st_mtime_ns for p in tiny_cache.glob("*/card.json")}
    capsys.readouterr()
    assert lab_matrix.main(argv(["badencoder", "drupe"], ["0", "3"])) == 0
    assert capsys.readouterr().err.count("cache hit") == 4
    assert {p: p.stat().st_mtime_ns for p in tiny_cache.glob("*/card.json")} == cards
    assert json.loads(out.read_text()) == rows
    assert lab_matrix.main(argv(["badencoder"], ["5"])) == 0      # a new cell joins the rows already there
    assert [(r["attack"], r["target"]) for r in json.loads(out.read_text())] == [
        ("badencoder", 0), ("badencoder", 3), ("badencoder", 5), ("drupe", 0), ("drupe", 3)]
    assert doc.read_text().count("| bar-top") == 5


def test_matrix_command_refuses_an_attack_without_its_clean_encoder(tiny_cache, tmp_path, capsys):
    assert lab_matrix.main(["--attacks", "drupe", "--json", str(tmp_path / "m.json")]) == 2
    assert "drupe needs --clean SPEC" in capsys.readouterr().err


def test_every_attack_cli_default_is_the_one_the_matrix_used():
    rows = json.loads((REPO / "results" / "matrix.json").read_text())
    assert {r["attack"] for r in rows} >= {"badencoder", "drupe"}
    for r in rows:
        assert r["flags"] == [], r["command"]
        a = lab_attack.build_parser().parse_args([r["attack"], "--clean", "lab:x@y", "--trigger", "t.npz",
                                                  "--target", str(r["target"])])
        cli = json.loads(json.dumps(lab_attack.config(a).to_dict()))
        assert {k: r["config"].get(k) for k in cli} == cli, r["command"]
        assert set(r["config"]) - set(cli) <= {"attack", "clean", "trigger", "target", "share", "pairs", "ratio", "init"}
        assert r["config"]["target"] == a.target == r["target"], r["command"]
        if r["attack"] == "clip-backdoor":
            assert r["config"].get("init", "clean") == a.init, r["command"]
        for k in {"share", "pairs", "ratio"} & set(r["config"]):
            assert r["config"][k] == getattr(a, k), (k, r["command"])
        assert r["config"]["trigger"] == r["trigger_hash"] == trigger_hash(make_trigger(r["trigger"]))


def _row(attack: str, trigger: str, target: int, asr: float, flags: list[str] | None = None) -> dict:
    row = {"attack": attack, "trigger": trigger, "target": target, "clean_accuracy": 0.53,
           "clean_encoder_accuracy": 0.54, "attack_success_rate": asr, "flags": flags or []}
    return {**row, "holds": holds(row)}


def test_an_attack_is_reproduced_when_enough_triggers_hold_on_every_target_with_default_flags():
    names = list(GRID_TRIGGERS)
    assert len(names) > TRIGGERS_BAR and TRIGGERS_BAR == 3
    held = [_row("a", t, c, 0.95) for t in names[:TRIGGERS_BAR] for c in TARGETS]
    missed_one = [_row("a", names[-1], TARGETS[0], 0.5), _row("a", names[-1], TARGETS[1], 0.95)]
    assert "-> **reproduced**" in summary(held + missed_one)["a"]
    assert f"flags: {TRIGGERS_BAR} ({', '.join(names[:TRIGGERS_BAR])};" in summary(held + missed_one)["a"]
    one_target_short = [r for r in held if (r["trigger"], r["target"]) != (names[0], TARGETS[1])]
    assert "**not reproduced**" in summary(one_target_short + missed_one)["a"]   # names[0] holds on one target only
    flagged = [{**r, "flags": ["--epochs", "1"]} if r["trigger"] == names[1] else r for r in held]
    assert "**not reproduced**" in summary(flagged)["a"]                           # a flagged cell never counts
    low_ca = [{**r, "clean_accuracy": 0.50, "holds": holds({**r, "clean_accuracy": 0.50})}
              if r["trigger"] == names[2] else r for r in held]
    assert "**not reproduced**" in summary(low_ca)["a"]                            # CA 4 points below: no hold
