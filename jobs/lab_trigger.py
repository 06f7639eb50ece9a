"""Write a trigger .npz: BadEncoder's white square, a checkerboard patch, a bar, a noise blend, or CTRL's frequency trigger.

Each trigger's flags and defaults are those of its function in pipeline.lab.triggers (TRIGGERS), so a
name always means the trigger the attacks use: `lab_trigger.py checker --out FILE` is their checker.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.lab.triggers import TRIGGERS  # noqa: E402

SCALARS = (int, float)


def _scalar_params(fn) -> dict[str, object]:
    """The keyword parameters of `fn` with int or float defaults: name -> default."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if type(p.default) in SCALARS}


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    kinds = ap.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(TRIGGERS) + "}")
    for kind, fn in TRIGGERS.items():
        sub = kinds.add_parser(kind, help=(inspect.getdoc(fn) or kind).splitlines()[0], description=inspect.getdoc(fn))
        sub.add_argument("--out", required=True, help="the .npz to write")
        for name, default in _scalar_params(fn).items():
            sub.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(default), default=default,
                             help=f"default {default}")
    return ap


def run(a: argparse.Namespace) -> None:
    fn = TRIGGERS[a.kind]
    trigger = fn(**{name: getattr(a, name) for name in _scalar_params(fn)})
    trigger.save(a.out)
    print(a.out)


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
