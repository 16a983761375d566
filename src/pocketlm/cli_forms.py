"""Argument parsing the stage CLIs share: a parser whose usage errors are one line with exit 2, and
verbs that take a free MODEL positional *and* named forms (``pocketlm intent MODEL TEXT`` next to
``pocketlm intent eval ...``), which argparse's sub-commands cannot mix."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

Form = tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def register_forms(subparsers, verb: str, help: str, description: str, usage: str,
                   forms: dict[str, Form], default: str = "run") -> None:
    """Add `verb`, which dispatches on its first word: a name in `forms`, anything else is the start of
    the `default` form (the one whose first positional is MODEL)."""
    names = "/".join(f for f in forms if f != default)
    p = subparsers.add_parser(
        verb, help=help, description=f"{description}\n\n{usage}\n\nRun `pocketlm {verb} FORM --help` "
                                     f"({names}) for each form's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter, usage="\n" + usage)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def dispatch(args) -> int:
        rest = list(args.rest)
        if not rest:
            print(usage, file=sys.stderr)
            return 2
        form = rest.pop(0) if rest[0] in forms else default
        make_parser, command = forms[form]
        return command(make_parser().parse_args(rest))

    p.set_defaults(func=dispatch)
