"""Tokenizers: train a byte-level BPE in Hugging Face format, or load any HF tokenizer.

The chat template lives here and only here (`CHAT_TEMPLATE`): it is stored in every tokenizer we save,
so training, `apply_chat_template` in transformers and inference all render the same ChatML prompt.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from pocketlm.data.sources import expand_paths, read_texts
from pocketlm.errors import UserError
from pocketlm.utils import atomic_dir

EOS_TOKEN = "<|endoftext|>"  # eos; also bos and pad
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# ids 0, 1, 2 in every tokenizer we train. No separate pad token: padding is masked out anyway and
# one fewer special id keeps the embedding table honest.
SPECIAL_TOKENS = [EOS_TOKEN, IM_START, IM_END]
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Plain ChatML (PhoneLM/Qwen style). A conversation without a system message gets the default one.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- set rest = messages[1:] -%}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- set rest = messages -%}"
    "{%- endif -%}"
    "{%- for message in rest -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """`CHAT_TEMPLATE` rendered without transformers (same jinja semantics as apply_chat_template)."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=add_generation_prompt)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

def _iter_texts(files_or_texts: Iterable[Any], text_field: str = "text") -> Iterator[str]:
    """Texts from strings, or from files/dirs/globs read like `data prepare` reads them
    (bad files and records skipped). Path-like items must exist."""
    items = [files_or_texts] if isinstance(files_or_texts, (str, os.PathLike)) else list(files_or_texts)
    paths = [x for x in items if isinstance(x, os.PathLike) or (isinstance(x, str) and _looks_like_path(x))]
    texts = [x for x in items if isinstance(x, str) and not _looks_like_path(x)]
    yield from texts
    if not paths:
        return
    skipped: Counter = Counter()
    yield from read_texts(expand_paths(paths, "tokenizer input"), skipped, text_field)
    if any(skipped.values()):
        print(f"tokenizer train: skipped {dict(skipped)}", file=sys.stderr)


def _looks_like_path(s: str) -> bool:
    # An existing path is a path; otherwise a string with whitespace is text (even with [, * or ?),
    # and one without is a path or glob, so a missing path fails loudly instead of becoming text.
    # Pass Path objects to be explicit.
    if len(s) > 4096:
        return False
    return os.path.exists(os.path.expanduser(s)) or not any(c.isspace() for c in s)


def train_tokenizer(files_or_texts: Iterable[Any], vocab_size: int, out_dir: str | os.PathLike,
                    min_frequency: int = 2, text_field: str = "text", progress: bool = False,
                    space_tokens: bool = False, split_digits: bool = True) -> Path:
    """Train a byte-level BPE tokenizer and save it (HF format, chat template included) to ``out_dir``.

    ``files_or_texts``: files, dirs or globs (txt / jsonl ``text_field`` / parquet), or raw text strings.
    Digits are split one per token unless ``split_digits=False`` (better arithmetic; no 3-digit number
    soup); ids 0-2 are
    ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``. The write is atomic.

    ``space_tokens``: every whitespace character is a token of its own, so words never carry a leading
    space. A word copied from a request into a quoted value (``query="Golden Gate"``) is then the same
    token as in the request -- with GPT-2-style " Golden" tokens the first copied word is a different id
    the model has rarely produced. Costs ~40% more tokens per text. llama.cpp tokenizes it identically
    with the pre-tokenizer of the same digit setting, since no learned merge crosses a space.

    ``split_digits=False``: a run of digits is one pre-token that BPE merges like a word ("51", "2682"),
    as in GPT-2 (llama.cpp's "gpt-2" pre-tokenizer splits the same way): fewer, rarer tokens per number.
    """
    # tokenizers is optional (pocketlm[hf]): `pocketlm --help` must work without it.
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if not isinstance(vocab_size, int) or vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise UserError(f"vocab_size must be an integer >= {256 + len(SPECIAL_TOKENS) + 1} "
                        f"(256 byte tokens + special tokens), got {vocab_size!r}")
    if min_frequency < 1:
        raise UserError(f"min_frequency must be >= 1, got {min_frequency}")
    seen = {"n": 0, "bytes": 0}

    def counted():
        for t in _iter_texts(files_or_texts, text_field):
            seen["n"] += 1
            seen["bytes"] += len(t)
            yield t

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        ([pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")] if space_tokens else [])
        + ([pre_tokenizers.Digits(individual_digits=True)] if split_digits else [])
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS, show_progress=progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t0 = time.time()
    tok.train_from_iterator(counted(), trainer=trainer)
    if seen["n"] == 0:
        raise UserError("no training text found for the tokenizer (inputs empty or all skipped)")
    out = save_tokenizer(tok, out_dir)
    print(f"tokenizer train: {tok.get_vocab_size():,} tokens from {seen['n']:,} texts "
          f"({seen['bytes'] / 1e6:.1f} MB) in {time.time() - t0:.1f}s -> {out}", file=sys.stderr)
    return out


def save_tokenizer(tok: Any, out_dir: str | os.PathLike) -> Path:
    """Wrap a `tokenizers.Tokenizer` as a transformers fast tokenizer and save it atomically."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                 pad_token=EOS_TOKEN, unk_token=None,
                                 additional_special_tokens=[IM_START, IM_END],
                                 clean_up_tokenization_spaces=False, model_max_length=1 << 30)
    hf.chat_template = CHAT_TEMPLATE
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        hf.save_pretrained(str(tmp))
        # Newer transformers put the template in chat_template.jinja; older ones and other tools
        # (llama.cpp's converter, vLLM) read tokenizer_config.json. Keep it in both.
        cfg_path = tmp / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["chat_template"] = CHAT_TEMPLATE
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def load_tokenizer(path_or_name: Any):
    """A transformers tokenizer from a tokenizer/checkpoint dir or a hub name (or passed through if
    already loaded). UserError when it can't be found or has no eos token."""
    if not isinstance(path_or_name, (str, os.PathLike)):
        if hasattr(path_or_name, "encode") and hasattr(path_or_name, "save_pretrained"):
            return path_or_name
        raise UserError(f"not a tokenizer: {path_or_name!r}")
    spec = os.path.expanduser(str(path_or_name))
    p = Path(spec)
    is_local = p.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if is_local:
        if not p.is_dir():
            raise UserError(f"tokenizer dir not found: {path_or_name}")
        if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
            raise UserError(f"no tokenizer in {path_or_name} (expected tokenizer.json; "
                            "make one with `pocketlm tokenizer train`)")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(spec)
    except Exception as e:  # noqa: BLE001 - hub/network/format errors become one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load tokenizer {path_or_name!r}: {first}") from None
    if tok.eos_token_id is None:
        raise UserError(f"tokenizer {path_or_name!r} has no eos token")
    return tok
