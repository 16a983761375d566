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


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random-weight tiny checkpoint with a tokenizer trained on synthetic intent text."""
    from pocketlm.model.checkpoint import save_checkpoint
    from pocketlm.intent import format_answer, synthesize
    from pocketlm.model.decoder import PocketLM
    from pocketlm.model.presets import get_preset
    from pocketlm.data.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("intent_ckpt")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(s.query + "\n" + format_answer(s.answers) for s in synthesize(200, seed=0)))
    tok_dir = train_tokenizer([str(corpus)], 400, d / "tok")
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    cfg = get_preset("tiny").replace(vocab_size=vocab, max_position_embeddings=4096)
    return save_checkpoint(PocketLM.from_config(cfg, seed=0), d / "ckpt", tokenizer=tok_dir)
