"""The one convention of every CLI in jobs/ and bench/: `main(argv) -> int`, one-line errors.

Exit codes: 0 done, 1 failed work (`WorkFailed`, any unexpected exception), 2 bad input (argparse
errors, `BadInput`, `ValueError`, missing files), 130 interrupted. A traceback is printed only with
`--debug`, which every parser made here accepts.

    def build_parser() -> argparse.ArgumentParser:
        ap = cli.parser(__doc__)
        ap.add_argument(...)
        return ap

    def run(a: argparse.Namespace) -> int | None: ...

    def main(argv: list[str] | None = None) -> int:
        return cli.main(build_parser(), run, argv)
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, NoReturn, Sequence

from pipeline.errors import BadInput, WorkFailed, describe, one_line

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    BadInput, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: MESSAGE (see --help)` and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{os.path.splitext(self.prog)[0]}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def parser(doc: str | None, prog: str | None = None) -> Parser:
    """A parser whose description is the script's docstring, with `--debug` (tracebacks) added."""
    ap = Parser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="print the full traceback on an error")
    return ap


def add_device(ap: argparse.ArgumentParser) -> None:
    """The shared `--device` (default auto: CUDA when available, else the CPU) and `--threads` flags."""
    ap.add_argument("--device", default="auto", help="auto (CUDA when available, else cpu), cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (x > 0 and x != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return x


def fail(prog: str, e: BaseException, code: int, debug: bool) -> int:
    """Print `e` as one line (or its traceback with --debug) and return the exit code."""
    if debug:
        traceback.print_exception(e)
    elif code == EXIT_FAILED and not isinstance(e, WorkFailed):
        print(f"{prog}: failed: {describe(e)} (rerun with --debug for the traceback)",
              file=sys.stderr)
    else:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
    return code


def main_recorded(ap: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
                  argv: Sequence[str] | None = None) -> int:
    """`main`, with the arguments also in `args.argv` (what a results file records as the command)."""
    ap.set_defaults(argv=list(sys.argv[1:] if argv is None else argv))
    return main(ap, run, argv)


def main(ap: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
         argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, call `run(args)`, and map what it raises to an exit code with one line on stderr."""
    try:
        a = ap.parse_args(argv)
    except SystemExit as e:             # --help (0) or a usage error already printed (2)
        return int(e.code or 0)
    prog = os.path.splitext(ap.prog)[0]
    debug = bool(getattr(a, "debug", False))
    try:
        return int(run(a) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BAD_INPUT_ERRORS as e:
        return fail(prog, e, EXIT_BAD_INPUT, debug)
    except Exception as e:  # noqa: BLE001 - any other failure is one line, not a traceback
        return fail(prog, e, EXIT_FAILED, debug)
