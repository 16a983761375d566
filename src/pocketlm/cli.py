"""`pocketlm` command line: one verb per pipeline stage.

Each stage module defines ``register(subparsers)``, adding its verb(s) with
``parser.set_defaults(func=...)``; ``func(args)`` returns an exit code (or None for 0).
Stage modules keep heavy imports (transformers, llama_cpp, matplotlib, peft) inside functions so
``pocketlm --help`` stays fast. A UserError anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pocketlm import __version__
from pocketlm.errors import UserError

STAGE_MODULES = (
    "pocketlm.model.cli",         # presets, info, init
    "pocketlm.data.cli",          # tokenizer train; data prepare / corpus / info
    "pocketlm.train.cli",         # pretrain, finetune
    "pocketlm.intent.cli",        # intent, intent eval, intent data
    "pocketlm.runtime.cli",       # generate, export, bench
    "pocketlm.search.cli",        # latency fit / predict / calibrate; search
    "pocketlm.documents.cli",     # doc, doc data / eval / predict / corpus
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
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"pocketlm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pocketlm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
