"""Shared fixtures. Stage-specific fixtures live in their own test files."""

import os

import pytest

# Tests are small; keep torch from oversubscribing the 2 cores when pytest runs.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def run_cli(capsys):
    """Run `pocketlm ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from pocketlm.cli import main

    def _run(*args: str):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse errors and --help
            code = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run
