"""An offline document set for DocAssist: 340-1000-token documents built from the built-in corpus.

Documents join consecutive "web" items of `pocketlm.data.corpus` (encyclopedia entries about one
consistent world of towns, people and animals, stories, recipes, letters, weather reports and passages of
the seed articles in assets/seeds) until each reaches its target length, drawn uniformly from
[min_tokens, max_tokens]. Deterministic in the seed; different seeds give different documents, so a
held-out split is a different seed (`split` does this).

Lengths are counted with a tokenizer when one is given, else estimated at 1.42 tokens per
whitespace-separated word (SmolLM2's tokenizer on this corpus).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Callable

from pocketlm.data.corpus import generate_documents
from pocketlm.documents.assist import count_tokens
from pocketlm.errors import UserError
from pocketlm.utils import atomic_write_text

TOKENS_PER_WORD = 1.42  # SmolLM2-135M's tokenizer on the built-in web corpus (51,820 tokens / 36,545 words)
MIN_TOKENS, MAX_TOKENS = 340, 1000
JOIN_TOKENS = 2  # the blank line between joined items, with margin


def estimate_tokens(text: str) -> int:
    return round(len(re.findall(r"\S+", text)) * TOKENS_PER_WORD)


def token_counter(tokenizer: Any = None) -> Callable[[str], int]:
    if tokenizer is None:
        return estimate_tokens
    return lambda text: count_tokens(text, tokenizer)


def offline_documents(n: int, seed: int = 0, min_tokens: int = MIN_TOKENS, max_tokens: int = MAX_TOKENS,
                      tokenizer: Any = None) -> list[str]:
    """n documents of min_tokens..max_tokens tokens from the built-in corpus."""
    if n < 1:
        raise UserError(f"the number of documents must be >= 1, got {n}")
    if not 50 <= min_tokens <= max_tokens:
        raise UserError(f"need 50 <= min tokens <= max tokens, got {min_tokens}..{max_tokens}")
    count = token_counter(tokenizer)
    rng = random.Random(f"pocketlm-docset-{seed}")
    items = generate_documents("web", 1 << 40, seed=seed)  # endless: we stop when we have n documents
    docs: list[str] = []
    parts: list[str] = []
    target = rng.randint(min_tokens, max_tokens)
    tokens = 0
    for item in items:
        item = item.strip()
        n_item = count(item)
        if tokens + n_item + JOIN_TOKENS > max_tokens:
            if tokens >= min_tokens:
                docs.append("\n\n".join(parts))
                if len(docs) == n:
                    return docs
            parts, tokens = [], 0  # an item that doesn't fit starts the next document
            target = rng.randint(min_tokens, max_tokens)
            if n_item > max_tokens:
                continue
        parts.append(item)
        tokens += n_item + JOIN_TOKENS
        if tokens >= target:
            docs.append("\n\n".join(parts))
            if len(docs) == n:
                return docs
            parts, tokens = [], 0
            target = rng.randint(min_tokens, max_tokens)
    return docs


def write_documents(docs: list[str], out_dir: str | os.PathLike, prefix: str = "doc") -> list[Path]:
    """Each document as out_dir/{prefix}-NNNNN.txt (atomic writes)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    return [atomic_write_text(out / f"{prefix}-{i:05d}.txt", d + "\n") for i, d in enumerate(docs)]


def split(n_train: int, n_test: int, seed: int = 0, **kwargs) -> tuple[list[str], list[str]]:
    """(train, held-out) documents: different corpus seeds, so no held-out item appears in training."""
    return offline_documents(n_train, seed=2 * seed, **kwargs), offline_documents(n_test, seed=2 * seed + 1, **kwargs)
