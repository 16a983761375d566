"""`pocketlm` command line: one verb per pipeline stage.

Each stage module defines ``register(subparsers)``, adding its verb(s) with
``parser.set_defaults(func=...)``; ``func(args)`` returns an exit code (or None for 0).
Stage modules keep heavy imports (transformers, llama_cpp, matplotlib, peft) inside functions so
``pocketlm --help`` stays fast. `main` is the one place that turns failures a user can act on into one
line on stderr: a UserError or an OS error (unwritable or missing path, full disk, read-only file system;
also when a library wraps it) exits 2, Ctrl-C 130, SIGTERM 143. How a verb writes so this holds: the
docstring of `pocketlm.utils`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from pocketlm import __version__
from pocketlm.errors import UserError
from pocketlm.utils import Terminated, os_error_message, os_error_of, sigterm_as_interrupt

STAGE_MODULES = (
    "pocketlm.model.cli",         # presets, info, init
    "pocketlm.data.cli",          # tokenizer train; data prepare / corpus / info
    "pocketlm.train.cli",         # pretrain, finetune
    "pocketlm.intent.cli",        # intent, intent eval, intent data
    "pocketlm.runtime.cli",       # generate, export, bench
    "pocketlm.search.cli",        # latency fit / predict / calibrate; search
    "pocketlm.documents.cli",     # doc, doc data / eval / predict / corpus
    "pocketlm.serve.cli",         # serve
    "pocketlm.eval.cli",          # eval, report
    "pocketlm.pipeline.cli",      # pipeline
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line + usage hint, exit 2 (argparse's convention)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pocketlm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pocketlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in STAGE_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = f"pocketlm {args.command}"
    try:
        with sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except UserError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a verb may say what was kept: KeyboardInterrupt("... saved in X")
        word = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"{name}: {word}" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    except Exception as e:
        err = os_error_of(e)
        if err is None or os.environ.get("POCKETLM_TRACEBACK"):
            raise  # a bug: the traceback is what a report needs
        print(f"{name}: error: {os_error_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
