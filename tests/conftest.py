"""Shared fixtures. Stage-specific fixtures live in their own test files."""

import os
from pathlib import Path

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


DOC_TEXT = "The quick brown fox jumps over the lazy dog. Foxes are small omnivores."
DOC_SUMMARY = "Foxes are small omnivores."


def overfit_doc_checkpoint(tiny_ckpt, out: Path) -> Path:
    """tiny_ckpt trained for a few steps to answer DOC_TEXT's summarization with DOC_SUMMARY."""
    import torch

    from pocketlm.documents.assist import stream_assist
    from pocketlm.documents.prompt import format_answer
    from pocketlm.model.checkpoint import load_checkpoint, load_tokenizer, save_checkpoint
    from pocketlm.runtime.engine import TorchRuntime

    torch.manual_seed(0)
    model, tok = load_checkpoint(tiny_ckpt), load_tokenizer(tiny_ckpt)
    rt = TorchRuntime(model, 4096, 2, tok)
    prompt = rt.encode_messages(stream_assist(rt, DOC_TEXT, "summarization").messages)
    answer = tok.encode(format_answer("summarization", DOC_SUMMARY), add_special_tokens=False)
    ids = torch.tensor([prompt + answer + rt.end_of_turn_ids()[-1:]])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0, len(prompt) - 1:], ids[0, len(prompt):])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_checkpoint(model.eval(), out, tokenizer=tiny_ckpt)


@pytest.fixture(scope="session")
def doc_ckpt(tiny_ckpt, tmp_path_factory):
    """tiny_ckpt overfit on one DocAssist answer: the document route has a real summary to show."""
    return overfit_doc_checkpoint(tiny_ckpt, tmp_path_factory.mktemp("serve") / "doc-ckpt")
