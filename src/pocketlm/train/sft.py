"""Chat data for supervised fine-tuning: records → conversations → tokens with an assistant-only
target mask → padded or packed micro-batches (`SFTBatches`), plus the chat template and how a
fine-tuned checkpoint saves it.

Data: records with a ``messages`` list (``{"role": "system"|"user"|"assistant", "content": str}``),
from JSONL files/dirs/globs or a Hugging Face dataset (``hf:NAME`` or ``owner/name``); ShareGPT
records (``conversations`` of ``{"from", "value"}``) are converted on load. Other record formats and
named sources plug in through the recipe (`pocketlm.train.finetune.FinetuneRecipe`): pocketlm.intent
adds DroidCall's.

One chat template: the base checkpoint's (``tokenizer.chat_template``), or `pocketlm.data.tokenizer.
CHAT_TEMPLATE` when it has none. Conversations are rendered with that template and tokenised once;
the loss covers only assistant turns (their content and end-of-turn token), found as the text an
assistant message adds to the rendering. The template is written into the output checkpoint's
tokenizer (tokenizer_config.json and chat_template.jinja), so ``apply_chat_template`` in
transformers renders exactly the prompts the model was trained on (`encode_prompt`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from pocketlm.data.tokenizer import CHAT_TEMPLATE, IM_END, IM_START, load_tokenizer
from pocketlm.errors import UserError
from pocketlm.model.checkpoint import save_checkpoint
from pocketlm.train.trainer import IGNORE_INDEX

ROLES = ("system", "user", "assistant")


# ============================================================================ chat data
def normalize_record(record: Any, messages_field: str = "messages") -> tuple[list[dict] | None, str | None]:
    """(messages, None) or (None, reason). Accepts `messages_field` lists of {role, content} and
    ShareGPT ``conversations`` lists of {from, value}."""
    if not isinstance(record, dict):
        return None, "not_an_object"
    msgs = record.get(messages_field)
    if msgs is None and "conversations" in record:
        sharegpt = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                    "assistant": "assistant"}
        conv = record["conversations"]
        if not isinstance(conv, list):
            return None, "bad_messages"
        msgs = []
        for m in conv:
            if not isinstance(m, dict) or m.get("from") not in sharegpt:
                return None, "bad_role"
            msgs.append({"role": sharegpt[m["from"]], "content": m.get("value")})
    if not isinstance(msgs, list) or not msgs:
        return None, "no_messages"
    out = []
    for m in msgs:
        if not isinstance(m, dict):
            return None, "bad_messages"
        if m.get("role") not in ROLES:
            return None, "bad_role"
        if not isinstance(m.get("content"), str):
            return None, "bad_content"
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        return None, "no_assistant_turn"
    return out, None


def read_jsonl_records(spec: str, skipped: Counter) -> list[Any]:
    p = Path(spec).expanduser()
    if p.is_dir():
        files = sorted(x for x in p.rglob("*") if x.suffix in (".jsonl", ".json", ".ndjson") and x.is_file())
    elif glob.has_magic(spec):
        files = sorted(Path(x) for x in glob.glob(os.path.expanduser(spec)))
    else:
        files = [p]
    if not files:
        raise UserError(f"no JSONL files found for data {spec!r}")
    records = []
    for f in files:
        try:
            lines = f.read_bytes().splitlines()
        except OSError as e:
            raise UserError(f"cannot read {f}: {e.strerror}") from None
        for line in lines:
            if not line.strip():
                continue
            try:
                records.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                skipped["malformed_jsonl"] += 1
    return records


def looks_local(spec: str) -> bool:
    return (os.path.exists(os.path.expanduser(spec)) or glob.has_magic(spec)
            or spec.startswith((".", "/", "~")) or Path(spec).suffix in (".jsonl", ".json", ".ndjson"))


def read_records(spec: str, *, split: str = "train", config: str | None = None,
                 skipped: Counter | None = None) -> list[Any]:
    """The raw records of a data spec: local JSONL (file, dir or glob) or a Hugging Face dataset."""
    if spec.startswith("hf:") or not looks_local(spec):
        return _load_hf_dataset(spec.removeprefix("hf:"), split, config)
    if not (glob.has_magic(spec) or os.path.exists(os.path.expanduser(spec))):
        raise UserError(f"data not found: {spec}")
    return read_jsonl_records(spec, Counter() if skipped is None else skipped)


def conversations_from_records(records: list[Any], messages_field: str, skipped: Counter) -> list[list[dict]]:
    convs = []
    for r in records:
        msgs, reason = normalize_record(r, messages_field)
        if msgs is None:
            skipped[reason] += 1
        else:
            convs.append(msgs)
    return convs


def check_conversations(convs: list[list[dict]], spec: str, messages_field: str, skipped: Counter) -> None:
    if not convs:
        detail = f" (skipped: {dict(skipped)})" if skipped else ""
        raise UserError(f"no usable conversations in {spec}{detail}; records need a '{messages_field}' list "
                        "with at least one assistant turn")


def load_chat_data(spec: str, *, split: str = "train", config: str | None = None,
                   messages_field: str = "messages") -> tuple[list[list[dict]], Counter]:
    """Conversations (lists of messages) from a data spec, and counts of skipped records by reason."""
    skipped: Counter = Counter()
    convs = conversations_from_records(read_records(spec, split=split, config=config, skipped=skipped),
                                       messages_field, skipped)
    check_conversations(convs, spec, messages_field, skipped)
    return convs, skipped


def _load_hf_dataset(name: str, split: str, config: str | None) -> list[Any]:
    """A Hugging Face dataset (hub name or local dataset dir) as a list of dict records."""
    try:
        import datasets
    except ImportError:
        raise UserError("loading Hugging Face datasets needs the datasets package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - hub/network/format errors become one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load dataset {name!r} (split {split!r}): {first}") from None
    return list(ds)


# ---------------------------------------------------------------------------- template + tokens
def chat_template_of(tokenizer) -> str:
    """The template used for training and inference: the tokenizer's own, else pocketlm's ChatML."""
    return tokenizer.chat_template or CHAT_TEMPLATE


def prepare_tokenizer(tokenizer):
    """Set the chat template (when missing) and check the tokens it needs exist as single tokens."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.chat_template == CHAT_TEMPLATE:
        vocab = tokenizer.get_vocab()
        missing = [t for t in (IM_START, IM_END) if t not in vocab]
        if missing:
            raise UserError(f"the tokenizer lacks the chat tokens {missing}; train one with "
                            "`pocketlm tokenizer train` (it adds them) or use a tokenizer with a chat template")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the loss covers.

    An assistant turn's span is what its message adds to the rendering after the generation
    prompt (its content and end-of-turn marker), trailing whitespace excluded. Works for any
    template whose renderings of a conversation's prefixes are prefixes of each other."""
    text = _render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render(tokenizer, messages[:i + 1])
        if not text.startswith(upto) or not upto.startswith(before):
            raise UserError("the chat template does not render conversations incrementally (a prefix of the "
                            "conversation is not a prefix of its rendering); cannot locate assistant turns")
        end = len(upto.rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return text, spans


def encode_chat(tokenizer, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, target mask): True where the token belongs to an assistant turn."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(len(ids), dtype=bool)
    for s, e in spans:  # any overlap: a token straddling the boundary carries answer text
        mask |= (offsets[:, 1] > s) & (offsets[:, 0] < e)
    return ids, mask


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the inference prompt (conversation + generation prompt); equals transformers'
    ``apply_chat_template(messages, add_generation_prompt=True)`` with the checkpoint's tokenizer."""
    text = _render(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def stop_token_ids(tokenizer) -> list[int]:
    """Tokens that end an assistant turn: eos plus the template's end-of-turn token (<|im_end|>)."""
    ids = [tokenizer.eos_token_id]
    vocab = tokenizer.get_vocab()
    if IM_END in vocab:
        ids.append(vocab[IM_END])
    return list(dict.fromkeys(i for i in ids if i is not None))


@dataclass
class Tokenized:
    examples: list[tuple[np.ndarray, np.ndarray]]  # (ids, target mask) per conversation
    stats: dict[str, int] = field(default_factory=dict)


def tokenize_conversations(tokenizer, conversations: Iterable[list[dict]], seq_len: int) -> Tokenized:
    """Encode conversations; longer than seq_len + 1 tokens are cut (dropped if no target survives)."""
    examples, stats = [], Counter()
    for msgs in conversations:
        ids, mask = encode_chat(tokenizer, msgs)
        if len(ids) > seq_len + 1:
            ids, mask = ids[:seq_len + 1], mask[:seq_len + 1]
            stats["truncated"] += 1
        if not mask[1:].any():
            stats["no_target_tokens"] += 1
            continue
        examples.append((ids, mask))
    stats["examples"] = len(examples)
    stats["tokens"] = int(sum(len(i) for i, _ in examples))
    stats["target_tokens"] = int(sum(int(m[1:].sum()) for _, m in examples))
    return Tokenized(examples, dict(stats))


def pack_examples(examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int,
                  pad_id: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Greedy packing in order into rows of exactly seq_len + 1 tokens. A conversation is never split
    across rows; the tail of a row is padding with no targets. (No cross-document attention masking,
    as in PhoneLM's SFT: later conversations in a row see earlier ones.)"""
    rows, cur_ids, cur_mask, used = [], [], [], 0
    width = seq_len + 1

    def flush():
        ids = np.full(width, pad_id, dtype=np.int64)
        mask = np.zeros(width, dtype=bool)
        if cur_ids:
            ids[:used] = np.concatenate(cur_ids)
            mask[:used] = np.concatenate(cur_mask)
        rows.append((ids, mask))

    for ids, mask in examples:
        if used and used + len(ids) > width:
            flush()
            cur_ids, cur_mask, used = [], [], 0
        cur_ids.append(ids[:width])
        cur_mask.append(mask[:width])
        used += min(len(ids), width)
    if used:
        flush()
    return rows


def collate(rows: list[tuple[np.ndarray, np.ndarray]], pad_id: int, pad_to_multiple_of: int = 1) -> dict:
    """Right-padded micro-batch; labels shifted (labels[t] = target for position t), -100 elsewhere.
    The width is rounded up to `pad_to_multiple_of`. On CPU, batches of ever-new widths grow the process
    and slow it: a SmolLM2-135M LoRA run over random widths went from 7.4 to 9.9 GB and from 394 to 286 tok/s
    in 75 steps; padded to 64 it stayed at 7.1-7.4 GB and ~400 tok/s."""
    width = max(len(ids) for ids, _ in rows) - 1
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for b, (ids, mask) in enumerate(rows):
        n = len(ids) - 1
        t_ids = torch.from_numpy(ids)
        inputs[b, :n] = t_ids[:-1]
        target = torch.from_numpy(mask[1:])
        labels[b, :n] = torch.where(target, t_ids[1:], torch.full_like(t_ids[1:], IGNORE_INDEX))
    return {"input_ids": inputs, "labels": labels}


class SFTBatches:
    """Global batches of rows drawn from a seeded permutation per epoch; state = the step number.

    Each rank takes its slice of the global batch, cut into `grad_accum` micro-batches.
    `group_by_length` (as transformers' LengthGroupedSampler): the permutation is cut into windows of
    64 global batches, each window sorted by length and cut into micro-batch blocks whose order is then
    shuffled. A micro-batch pads to its longest row, so similar lengths waste less compute (~20% for
    DroidCall prompts), while a window still mixes the whole epoch's order."""

    GROUP_WINDOW = 64  # global batches per length-sorted window

    def __init__(self, rows: list[tuple[np.ndarray, np.ndarray]], batch_size: int, micro: int,
                 rank: int, world: int, seed: int, pad_id: int, group_by_length: bool = False,
                 pad_to_multiple_of: int = 1):
        if not rows:
            raise UserError("no training sequences")
        self.rows, self.batch_size, self.micro = rows, batch_size, micro
        self.rank, self.world, self.seed, self.pad_id = rank, world, seed, pad_id
        self.group_by_length, self.pad_to_multiple_of = group_by_length, pad_to_multiple_of
        self._lengths = np.array([len(ids) for ids, _ in rows]) if group_by_length else None
        self.accum = batch_size // (micro * world)
        self.step, self.micro_index = 0, 0
        self._perm_epoch, self._perm = -1, None
        self._micros: list[list[int]] = []

    def _perm_for(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, 0x5F7, epoch])
            perm = rng.permutation(len(self.rows))
            if self.group_by_length:
                window, blocks = self.batch_size * self.GROUP_WINDOW, []
                for w in range(0, len(perm), window):
                    part = perm[w:w + window]
                    part = part[np.argsort(self._lengths[part], kind="stable")]
                    chunk = [part[i:i + self.micro] for i in range(0, len(part), self.micro)]
                    blocks += [chunk[j] for j in rng.permutation(len(chunk))]
                perm = np.concatenate(blocks)
            self._perm, self._perm_epoch = perm, epoch
        return self._perm

    def global_indices(self, step: int) -> list[int]:
        out = []
        for g in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, pos = divmod(g, len(self.rows))
            out.append(int(self._perm_for(epoch)[pos]))
        return out

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.micro_index == 0:
            per_rank = self.batch_size // self.world
            mine = self.global_indices(self.step)[self.rank * per_rank:(self.rank + 1) * per_rank]
            self._micros = [mine[j * self.micro:(j + 1) * self.micro] for j in range(self.accum)]
        batch = collate([self.rows[i] for i in self._micros[self.micro_index]], self.pad_id,
                        self.pad_to_multiple_of)
        self.micro_index += 1
        if self.micro_index == self.accum:
            self.micro_index, self.step = 0, self.step + 1
        return batch

    def state_dict(self) -> dict:
        if self.micro_index:
            raise RuntimeError("data state is only saved at optimizer-step boundaries")
        return {"step": self.step, "seed": self.seed, "batch_size": self.batch_size, "rows": len(self.rows),
                "group_by_length": self.group_by_length}

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("seed", self.seed), ("batch_size", self.batch_size), ("rows", len(self.rows)),
                          ("group_by_length", self.group_by_length)):
            theirs = state.get(key, False if key == "group_by_length" else None)  # older checkpoints lack it
            if theirs != mine:
                raise UserError(f"cannot resume: the checkpoint was made with {key}={theirs}, "
                                f"this run has {mine} (changed data or recipe?)")
        self.step, self.micro_index = int(state["step"]), 0


def save_chat_tokenizer(tokenizer: Any, dest: Path) -> None:
    """Save the tokenizer with its chat template in BOTH tokenizer_config.json and chat_template.jinja
    (older tools read the former), plus a generation_config.json that stops at the end of a turn."""
    tok = load_tokenizer(tokenizer)
    template = chat_template_of(tok)
    tok.chat_template = template
    tok.save_pretrained(str(dest))
    cfg_path = dest / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    stops = stop_token_ids(tok)
    gen = {"bos_token_id": tok.bos_token_id, "eos_token_id": stops if len(stops) > 1 else stops[0],
           "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
    (dest / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def save_chat_checkpoint(model, out_dir: str | os.PathLike, tokenizer: Any, dtype) -> Path:
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok_dir = None
    if tokenizer is not None:
        tok_dir = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=out.parent))
    try:
        if tok_dir is not None:
            save_chat_tokenizer(tokenizer, tok_dir)
        return save_checkpoint(model, out, tokenizer=str(tok_dir) if tok_dir else None, dtype=dtype)
    finally:
        if tok_dir is not None:
            shutil.rmtree(tok_dir, ignore_errors=True)
