"""`pocketlm finetune`: supervised fine-tuning on chat data, full or LoRA (peft), on the shared trainer.

Data: records with a ``messages`` list (``{"role": "system"|"user"|"assistant", "content": str}``),
from JSONL files/dirs/globs or a Hugging Face dataset (``hf:NAME`` or ``owner/name``); ShareGPT
records (``conversations`` of ``{"from", "value"}``) and DroidCall records (``query`` + ``answers``,
rendered with the ``code_short`` prompt of `pocketlm.intent`) are converted on load. The built-in
source ``droidcall-synth`` synthesises DroidCall-format training data offline.

One chat template: the base checkpoint's (``tokenizer.chat_template``), or `pocketlm.data.tokenizer.
CHAT_TEMPLATE` when it has none. Conversations are rendered with that template and tokenised once;
the loss covers only assistant turns (their content and end-of-turn token), found as the text an
assistant message adds to the rendering. The template is written into the output checkpoint's
tokenizer (tokenizer_config.json and chat_template.jinja), so ``apply_chat_template`` in
transformers renders exactly the prompts the model was trained on (`encode_prompt`).

Training uses `pocketlm.train.trainer.Trainer` (AdamW, schedules, grad accumulation, clipping, JSONL
metrics, atomic keep-last-k checkpoints with optimizer/RNG/data state, exact resume, DDP). The data
order is a seeded permutation per epoch, so the data position is just the step number.

LoRA is applied by peft directly to our `PocketLM` (no task type): its module names are those of
``LlamaForCausalLM``, so the saved adapter (``adapter_config.json`` + ``adapter_model.safetensors``,
task_type CAUSAL_LM) loads with ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
adapter)``. Trainer checkpoints hold only the adapter weights.

Output directory: ``recipe.yaml``, ``metrics.jsonl``, ``checkpoints/step_N`` (rerun to resume),
``final/`` (standard checkpoint with tokenizer + chat template; for LoRA the merged model unless
``merge: false``), ``adapter/`` (LoRA only), ``loss.png``, ``summary.json``.
``pocketlm finetune merge ADAPTER --out DIR [--base CKPT]`` merges any saved adapter later.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pocketlm.errors import UserError

from pocketlm.train.recipe import RECIPES_DIR
ROLES = ("system", "user", "assistant")
LORA_SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
              "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
SYNTH_SOURCE = "droidcall-synth"


# ============================================================================ recipe
@dataclass
class FinetuneRecipe:
    name: str = "custom"
    description: str = ""
    base: str = ""  # checkpoint dir with a tokenizer (e.g. pretrain's final/) or a preset (random weights)
    tokenizer: str | None = None  # tokenizer dir when `base` has none
    data: str = ""  # JSONL file/dir/glob | hf:NAME | owner/name (HF hub) | droidcall-synth
    data_split: str = "train"  # HF datasets only
    data_config: str | None = None  # HF dataset config name
    messages_field: str = "messages"
    val_data: str | None = None  # same forms as `data`; default: val_fraction of `data`
    val_fraction: float = 0.0
    max_samples: int | None = None  # cap on training conversations (after shuffling)
    synth_samples: int = 2000  # droidcall-synth: training samples to generate
    synth_multi_fraction: float = 0.3  # droidcall-synth: share of multi-call requests
    candidates: int = 4  # DroidCall records: functions listed in the code_short prompt
    doc_style: str = "full"  # DroidCall records: full (DroidCall's code docs) | brief (one-line docs)
    seq_len: int = 2048  # max tokens per training sequence; longer conversations are truncated
    packing: bool = False  # concatenate conversations into seq_len rows (no cross-document masking)
    group_by_length: bool = False  # micro-batches of similar lengths: less padding (unpacked rows only)
    method: str = "full"  # full | lora
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "q,k,gate,up,down"  # comma list; q,k,v,o,gate,up,down or full module names
    merge: bool = True  # LoRA: final/ = base with the adapter merged in (adapter/ is always saved)
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 16  # global sequences per optimizer step (all ranks, all micro-batches)
    micro_batch_size: int | None = None  # per rank per forward; None = batch_size / ranks
    lr: float = 2e-5
    min_lr: float = 0.0
    schedule: str = "cosine"  # cosine | linear | wsd | constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 autocast on GPUs that have it) | bf16 | fp32
    model_dtype: str = "float32"  # weights in memory; bfloat16 halves a frozen LoRA base
    save_dtype: str = "float32"
    compile: bool = False
    parallel: str = "ddp"
    device: str = "auto"
    eval_every: int = 0  # steps (0: only at the end)
    save_every: int = 100  # steps (0: only at the end)
    keep_last: int = 2
    log_every: int = 1
    tensorboard: bool = False
    seed: int = 0


def _hints() -> dict[str, Any]:
    import typing

    return typing.get_type_hints(FinetuneRecipe)


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> FinetuneRecipe:
    from pocketlm.train.recipe import check_value

    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of fields, got {type(data).__name__}")
    hints = _hints()
    known = {f.name for f in fields(FinetuneRecipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown recipe field '{unknown[0]}' in {where} (known: {', '.join(sorted(known))})")
    kw = {}
    for k, v in data.items():
        if k == "lora_targets" and isinstance(v, list):
            v = ",".join(map(str, v))
        kw[k] = check_value(k, v, hints[k])
    recipe = FinetuneRecipe(**kw)
    validate_recipe(recipe)
    return recipe


def validate_recipe(r: FinetuneRecipe) -> None:
    from pocketlm.train.trainer import SCHEDULES

    if not r.base:
        raise UserError("recipe field 'base' is required (a checkpoint dir, e.g. runs/tiny/final)")
    if not r.data:
        raise UserError("recipe field 'data' is required (a JSONL file, hf:NAME or droidcall-synth)")
    for name in ("seq_len", "batch_size", "micro_batch_size", "max_steps", "max_samples", "lora_r",
                 "lora_alpha", "epochs", "lr", "eps", "keep_last", "synth_samples", "candidates"):
        value = getattr(r, name)
        if value is not None and value <= 0:
            raise UserError(f"recipe field '{name}' must be positive, got {value}")
    for name in ("weight_decay", "grad_clip", "eval_every", "save_every", "log_every", "min_lr",
                 "warmup_steps"):
        if getattr(r, name) < 0:
            raise UserError(f"recipe field '{name}' must be >= 0, got {getattr(r, name)}")
    for name in ("val_fraction", "lora_dropout", "synth_multi_fraction"):
        if not 0 <= getattr(r, name) < 1:
            raise UserError(f"recipe field '{name}' must be in [0, 1), got {getattr(r, name)}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(r, name) < 1:
            raise UserError(f"recipe field '{name}' must be in [0, 1), got {getattr(r, name)}")
    choices = {"method": ("full", "lora"), "schedule": SCHEDULES, "precision": ("auto", "bf16", "fp32"),
               "parallel": ("ddp", "fsdp"), "device": ("auto", "cpu", "cuda"),
               "model_dtype": ("float32", "bfloat16", "float16"), "doc_style": ("full", "brief"),
               "save_dtype": ("float32", "bfloat16", "float16")}
    for name, allowed in choices.items():
        if getattr(r, name) not in allowed:
            raise UserError(f"recipe field '{name}' must be one of {', '.join(allowed)}, got {getattr(r, name)!r}")
    lora_target_modules(r.lora_targets)
    if r.method == "lora" and r.parallel == "fsdp":
        raise UserError("recipe field 'parallel': LoRA runs with ddp (the frozen base is small enough "
                        "to replicate); use method: full for fsdp")


def lora_target_modules(spec: str) -> list[str]:
    """"q,k,gate" → ["q_proj", "k_proj", "gate_proj"] (full names pass through)."""
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not names:
        raise UserError("recipe field 'lora_targets' must name at least one module")
    out = []
    for n in names:
        full = LORA_SHORT.get(n, n)
        if full not in LORA_SHORT.values():
            raise UserError(f"recipe field 'lora_targets': unknown module {n!r} "
                            f"(choose from {', '.join(LORA_SHORT)} or their *_proj names)")
        out.append(full)
    return list(dict.fromkeys(out))


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if _is_finetune_recipe(p))


def _is_finetune_recipe(path: Path) -> bool:
    try:
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
    except Exception:  # noqa: BLE001 - a broken built-in file is simply not listed
        return False
    return isinstance(data, dict) and "base" in data and "phases" not in data


def load_recipe(spec: str) -> FinetuneRecipe:
    """A recipe YAML/JSON path or the name of a built-in fine-tuning recipe."""
    from pocketlm.train.recipe import read_recipe_file

    path, data = read_recipe_file(spec)
    if isinstance(data, dict) and "phases" in data:
        raise UserError(f"{path} is a pre-training recipe; run it with `pocketlm pretrain {spec}`")
    return recipe_from_dict(data, where=str(path))


def recipe_to_dict(r: FinetuneRecipe) -> dict[str, Any]:
    return dataclasses.asdict(r)


def override_parser(recipe: FinetuneRecipe | None = None) -> argparse.ArgumentParser:
    """One flag per recipe field (``--max-steps 30``, ``--method lora``), like `pocketlm pretrain`."""
    from pocketlm.train.recipe import OverrideParser, converter, flag_names

    p = OverrideParser(prog="pocketlm finetune RECIPE", allow_abbrev=False,
                        description="Recipe fields you can override (values in the recipe shown as defaults).")
    p.add_argument("--out", help="output dir (default: runs/RECIPE_NAME); rerun with the same dir to resume")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe, then exit")
    group = p.add_argument_group("recipe fields")
    hints = _hints()
    for f in fields(FinetuneRecipe):
        cur = getattr(recipe, f.name) if recipe is not None else f.default
        group.add_argument(*flag_names(f.name), dest=f"r:{f.name}", default=argparse.SUPPRESS,
                           type=converter(f.name, hints[f.name]), metavar="V", help=f"(default: {cur})")
    return p


def apply_overrides(recipe: FinetuneRecipe, argv: list[str]) -> tuple[FinetuneRecipe, argparse.Namespace]:
    parser = override_parser(recipe)
    ns, extra = parser.parse_known_args(argv)
    if extra:
        flag = next((a for a in extra if a.startswith("-")), extra[0])
        raise UserError(f"unknown recipe field '{flag.lstrip('-')}' (see `pocketlm finetune {recipe.name} --help`)")
    data = recipe_to_dict(recipe)
    for key, value in vars(ns).items():
        kind, _, rest = key.partition(":")
        if kind == "r":
            data[rest] = value
    return recipe_from_dict(data, where="recipe with command-line overrides"), ns


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


def _is_droidcall(record: Any) -> bool:
    return isinstance(record, dict) and "query" in record and "answers" in record


def _droidcall_to_messages(records: list[dict], seed: int, k: int, doc_style: str,
                           skipped: Counter) -> list[list[dict]]:
    from pocketlm.intent.prompt import to_sft_records
    from pocketlm.intent.specs import check_answers, load_specs, normalize_answers, Sample

    specs = load_specs()
    samples = []
    for r in records:
        if not isinstance(r.get("query"), str) or check_answers(r.get("answers")):
            skipped["malformed_droidcall"] += 1
            continue
        samples.append(Sample(r["query"], normalize_answers(r["answers"])))
    out = [rec["messages"] for rec in to_sft_records(samples, specs, seed=seed, k=k, doc_style=doc_style)]
    skipped["unknown_function"] += len(samples) - len(out)
    return out


def _read_jsonl_records(spec: str, skipped: Counter) -> list[Any]:
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


def _looks_local(spec: str) -> bool:
    return (os.path.exists(os.path.expanduser(spec)) or glob.has_magic(spec)
            or spec.startswith((".", "/", "~")) or Path(spec).suffix in (".jsonl", ".json", ".ndjson"))


def load_chat_data(spec: str, *, split: str = "train", config: str | None = None,
                   messages_field: str = "messages", seed: int = 0, candidates: int = 4, doc_style: str = "full",
                   synth_samples: int = 2000, synth_multi_fraction: float = 0.3,
                   ) -> tuple[list[list[dict]], Counter]:
    """Conversations (lists of messages) from a data spec, and counts of skipped records by reason."""
    skipped: Counter = Counter()
    if spec == SYNTH_SOURCE:
        from pocketlm.intent import synthesize

        samples = synthesize(synth_samples, seed=seed, split="train", multi_fraction=synth_multi_fraction)
        records: list[Any] = [s.to_json() for s in samples]
    elif spec.startswith("hf:") or not _looks_local(spec):
        records = _load_hf_dataset(spec.removeprefix("hf:"), split, config)
    else:
        if not (glob.has_magic(spec) or os.path.exists(os.path.expanduser(spec))):
            raise UserError(f"data not found: {spec}")
        records = _read_jsonl_records(spec, skipped)
    convs: list[list[dict]] = []
    droidcall = [r for r in records if _is_droidcall(r)]
    if droidcall:
        convs += _droidcall_to_messages(droidcall, seed, candidates, doc_style, skipped)
    for r in records:
        if _is_droidcall(r):
            continue
        msgs, reason = normalize_record(r, messages_field)
        if msgs is None:
            skipped[reason] += 1
        else:
            convs.append(msgs)
    if not convs:
        detail = f" (skipped: {dict(skipped)})" if skipped else ""
        raise UserError(f"no usable conversations in {spec}{detail}; records need a '{messages_field}' list "
                        "with at least one assistant turn")
    return convs, skipped


def write_intent_meta(recipe: FinetuneRecipe, ckpt_dir: str | os.PathLike) -> Path | None:
    """For DroidCall training data (the synthesizer or local JSONL): save how the model was prompted and
    which arguments the data copies verbatim from the request (`pocketlm.intent.grammar`), so
    `pocketlm intent` prompts and decodes the checkpoint the way it was trained. None for other data."""
    from pocketlm.intent.grammar import learn_copy_args, save_intent_meta
    from pocketlm.intent.specs import Sample, check_answers, normalize_answers

    if recipe.data == SYNTH_SOURCE:
        from pocketlm.intent import synthesize

        samples = synthesize(recipe.synth_samples, seed=recipe.seed, split="train",
                             multi_fraction=recipe.synth_multi_fraction)
    elif _looks_local(recipe.data) and not recipe.data.startswith("hf:"):
        records = [r for r in _read_jsonl_records(recipe.data, Counter()) if _is_droidcall(r)]
        samples = [Sample(r["query"], normalize_answers(r["answers"])) for r in records
                   if isinstance(r.get("query"), str) and not check_answers(r.get("answers"))]
    else:
        return None
    if not samples:
        return None
    return save_intent_meta(ckpt_dir, doc_style=recipe.doc_style, candidates=recipe.candidates,
                            copy_args=learn_copy_args(samples))


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
    from pocketlm.data.tokenizer import CHAT_TEMPLATE

    return tokenizer.chat_template or CHAT_TEMPLATE


def prepare_tokenizer(tokenizer):
    """Set the chat template (when missing) and check the tokens it needs exist as single tokens."""
    from pocketlm.data.tokenizer import CHAT_TEMPLATE, IM_END, IM_START

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
    from pocketlm.data.tokenizer import IM_END

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


def collate(rows: list[tuple[np.ndarray, np.ndarray]], pad_id: int) -> dict:
    """Right-padded micro-batch; labels shifted (labels[t] = target for position t), -100 elsewhere."""
    import torch

    from pocketlm.train.trainer import IGNORE_INDEX

    width = max(len(ids) for ids, _ in rows) - 1
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
                 rank: int, world: int, seed: int, pad_id: int, group_by_length: bool = False):
        if not rows:
            raise UserError("no training sequences")
        self.rows, self.batch_size, self.micro = rows, batch_size, micro
        self.rank, self.world, self.seed, self.pad_id = rank, world, seed, pad_id
        self.group_by_length = group_by_length
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
        batch = collate([self.rows[i] for i in self._micros[self.micro_index]], self.pad_id)
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


# ============================================================================ LoRA (peft)
def apply_lora(model, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets: str | list[str] = "q,k,gate,up,down"):
    """Wrap a PocketLM in a peft LoRA model (base frozen). Module names match LlamaForCausalLM."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("LoRA needs peft: pip install peft") from None
    modules = lora_target_modules(targets if isinstance(targets, str) else ",".join(targets))
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    absent = [m for m in modules if m not in present]
    if absent:
        raise UserError(f"LoRA targets {absent} do not exist in this model (gated_mlp: false has no gate_proj)")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none")
    return get_peft_model(model, cfg)


def lora_state_dict(peft_model) -> dict:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}


def save_adapter(peft_model, out_dir: str | os.PathLike, base: str | None = None,
                 tokenizer: Any = None) -> Path:
    """adapter_config.json (task_type CAUSAL_LM, for transformers+peft users) + adapter_model.safetensors
    (+ tokenizer files), written atomically."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        peft_model.save_pretrained(str(tmp))
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update(task_type="CAUSAL_LM", auto_mapping=None,
                   base_model_name_or_path=str(Path(base).resolve()) if base and Path(base).exists() else base)
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp / "README.md").unlink(missing_ok=True)
        if tokenizer is not None:
            _copy_tokenizer(tokenizer, tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_adapter(model, adapter_dir: str | os.PathLike):
    """Attach a saved LoRA adapter (ours or any peft adapter for a Llama/Qwen2 model) to a PocketLM."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg_path, weights = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise UserError(f"not a LoRA adapter dir (needs adapter_config.json + adapter_model.safetensors): {d}")
    raw = json.loads(cfg_path.read_text())
    if raw.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{d} holds a {raw.get('peft_type')} adapter; only LoRA can be merged")
    config = LoraConfig.from_pretrained(str(d))
    config.task_type = None  # our model is a plain nn.Module, not a transformers PreTrainedModel
    config.inference_mode = False
    config.base_model_name_or_path = None  # we pass the base model object ourselves
    peft_model = get_peft_model(model, config)
    sd = load_file(str(weights))
    result = set_peft_model_state_dict(peft_model, sd)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise UserError(f"adapter does not fit the model: unexpected {unexpected[:3]}")
    return peft_model


def merge_adapter(base: str, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  dtype: str = "float32") -> Path:
    """Base checkpoint + adapter → a standard checkpoint (tokenizer from the adapter dir or base)."""
    from pocketlm.model.checkpoint import has_tokenizer, load_checkpoint, parse_dtype

    model = load_checkpoint(base)
    merged = load_adapter(model, adapter_dir).merge_and_unload()
    tok_src = adapter_dir if has_tokenizer(adapter_dir) else (base if has_tokenizer(base) else None)
    return _save_final(merged, out_dir, tok_src, parse_dtype(dtype))


# ============================================================================ checkpoints
def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _copy_tokenizer(tokenizer: Any, dest: Path) -> None:
    """Save the tokenizer with its chat template in BOTH tokenizer_config.json and chat_template.jinja
    (older tools read the former), plus a generation_config.json that stops at the end of a turn."""
    from pocketlm.data.tokenizer import load_tokenizer

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


def _save_final(model, out_dir: str | os.PathLike, tokenizer: Any, dtype) -> Path:
    from pocketlm.model.checkpoint import save_checkpoint

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok_dir = None
    if tokenizer is not None:
        tok_dir = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=out.parent))
    try:
        if tok_dir is not None:
            _copy_tokenizer(tokenizer, tok_dir)
        return save_checkpoint(model, out, tokenizer=str(tok_dir) if tok_dir else None, dtype=dtype)
    finally:
        if tok_dir is not None:
            shutil.rmtree(tok_dir, ignore_errors=True)


def _trainable_save(model, ckpt_dir: Path, dist_info) -> None:
    """Trainer checkpoints of a LoRA run hold only the trainable (adapter) tensors."""
    from pocketlm.train.trainer import save_model_safetensors, unwrap_model

    if dist_info.is_main:
        m = unwrap_model(model)
        sd = {n: p.detach().cpu() for n, p in m.named_parameters() if p.requires_grad}
        save_model_safetensors(sd, ckpt_dir / "model.safetensors")


def _trainable_load(model, ckpt_dir: Path, dist_info) -> None:
    import torch

    from pocketlm.train.trainer import load_model_safetensors, unwrap_model

    m = unwrap_model(model)
    sd = load_model_safetensors(ckpt_dir / "model.safetensors")
    params = dict(m.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    if set(sd) != want:
        raise UserError(f"cannot resume: checkpoint {ckpt_dir} holds different adapter tensors "
                        "(changed lora_r / lora_targets?)")
    with torch.no_grad():
        for n, v in sd.items():
            params[n].copy_(v)


# ============================================================================ run
def _load_base(recipe: FinetuneRecipe):
    """(model, tokenizer, tokenizer source) for the recipe's base."""
    from pocketlm.model.checkpoint import has_tokenizer, is_checkpoint_dir, load_model, parse_dtype
    from pocketlm.data.tokenizer import load_tokenizer

    base = recipe.base
    if not is_checkpoint_dir(base) and os.sep in base:
        raise UserError(f"base checkpoint not found: {base} (pre-train one with `pocketlm pretrain`)")
    tok_src = recipe.tokenizer or (base if is_checkpoint_dir(base) and has_tokenizer(base) else None)
    if tok_src is None:
        raise UserError(f"{base} has no tokenizer; set recipe field 'tokenizer' to a tokenizer dir")
    tokenizer = prepare_tokenizer(load_tokenizer(tok_src))
    model = load_model(base, dtype=parse_dtype(recipe.model_dtype), seed=recipe.seed)
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                        f"{model.config.vocab_size}")
    if recipe.seq_len > model.config.max_position_embeddings:
        raise UserError(f"seq_len {recipe.seq_len} exceeds the model's max_position_embeddings "
                        f"{model.config.max_position_embeddings}")
    return model, tokenizer, tok_src


def build_rows(recipe: FinetuneRecipe, tokenizer, say=print) -> tuple[list, list, dict]:
    """Training rows, validation rows and data stats, ready for `SFTBatches`."""
    kw = dict(split=recipe.data_split, config=recipe.data_config, messages_field=recipe.messages_field,
              seed=recipe.seed, candidates=recipe.candidates, doc_style=recipe.doc_style,
              synth_samples=recipe.synth_samples,
              synth_multi_fraction=recipe.synth_multi_fraction)
    convs, skipped = load_chat_data(recipe.data, **kw)
    rng = np.random.default_rng([recipe.seed, 0xDA7A])
    order = rng.permutation(len(convs))
    convs = [convs[i] for i in order]
    val_convs: list = []
    if recipe.val_data:
        val_convs, vskipped = load_chat_data(recipe.val_data, **{**kw, "split": "validation"
                                                                 if recipe.val_data.startswith("hf:") else "train"})
        skipped.update({f"val_{k}": v for k, v in vskipped.items()})
    elif recipe.val_fraction > 0:
        n_val = max(1, round(recipe.val_fraction * len(convs)))
        if n_val >= len(convs):
            raise UserError(f"val_fraction {recipe.val_fraction} leaves no training data ({len(convs)} conversations)")
        val_convs, convs = convs[:n_val], convs[n_val:]
    if recipe.max_samples:
        convs = convs[:recipe.max_samples]
    train = tokenize_conversations(tokenizer, convs, recipe.seq_len)
    val = tokenize_conversations(tokenizer, val_convs, recipe.seq_len) if val_convs else None
    if not train.examples:
        raise UserError("no training conversation has assistant tokens within seq_len")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = pack_examples(train.examples, recipe.seq_len, pad) if recipe.packing else train.examples
    val_rows = (pack_examples(val.examples, recipe.seq_len, pad) if recipe.packing else val.examples) if val else []
    stats = {"conversations": len(convs), "skipped": dict(skipped), "train": train.stats,
             "val": val.stats if val else None, "rows": len(rows), "val_rows": len(val_rows)}
    return rows, val_rows, stats


def run_finetune(recipe: FinetuneRecipe, out_dir: str | os.PathLike, print_fn=None) -> dict[str, Any]:
    """Fine-tune (or resume) `recipe` into out_dir; returns a summary dict (rank 0's view)."""
    import torch

    from pocketlm.model.checkpoint import parse_dtype
    from pocketlm.model.decoder import PocketLM
    from pocketlm.train.recipe import snapshot_recipe
    from pocketlm.train.trainer import (
        Schedule, Trainer, TrainerConfig, build_optimizer, default_load_model, default_save_model,
        full_model_state_dict, init_distributed, measure_matmul_peak, plot_loss_curve,
        teardown_distributed, train_flops_per_token)

    say = print_fn or (lambda s: print(s, flush=True))
    dist_info = init_distributed(None if recipe.device == "auto" else recipe.device)
    try:
        out = Path(out_dir)
        world = dist_info.world_size
        micro = recipe.micro_batch_size or max(1, recipe.batch_size // world)
        if recipe.batch_size % (micro * world):
            raise UserError(f"batch_size {recipe.batch_size} must be a multiple of micro_batch_size ({micro}) "
                            f"x ranks ({world})")
        accum = recipe.batch_size // (micro * world)
        torch.manual_seed(recipe.seed)  # LoRA init draws from the global RNG
        model, tokenizer, tok_src = _load_base(recipe)
        cfg = model.config
        rows, val_rows, data_stats = build_rows(recipe, tokenizer, say)
        total_steps = recipe.max_steps or max(1, math.ceil(recipe.epochs * len(rows) / recipe.batch_size))
        if recipe.method == "lora":
            model = apply_lora(model, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout, recipe.lora_targets)
            save_fn, load_fn = _trainable_save, _trainable_load
        else:
            save_fn, load_fn = default_save_model, default_load_model
        model = model.to(dist_info.device)
        if dist_info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            snapshot_recipe(out, recipe_to_dict(recipe), True)
        pad = tokenizer.pad_token_id
        batches = SFTBatches(rows, recipe.batch_size, micro, dist_info.rank, world, recipe.seed, pad,
                             group_by_length=recipe.group_by_length and not recipe.packing)
        evals = None
        if val_rows:
            mine = val_rows[dist_info.rank::world]

            def evals():
                for j in range(0, len(mine), micro):
                    yield collate(mine[j:j + micro], pad)

        schedule = Schedule(recipe.schedule, lr=recipe.lr, total_steps=total_steps,
                            warmup_steps=recipe.warmup_steps, min_lr=recipe.min_lr)
        tcfg = TrainerConfig(max_steps=total_steps, grad_accum=accum, grad_clip=recipe.grad_clip or None,
                             precision=recipe.precision, compile=recipe.compile, eval_every=recipe.eval_every,
                             save_every=recipe.save_every, keep_last=recipe.keep_last,
                             log_every=recipe.log_every, seed=recipe.seed, tensorboard=recipe.tensorboard,
                             parallel=recipe.parallel)
        mean_len = data_stats["train"]["tokens"] / max(1, data_stats["train"]["examples"])
        peak = measure_matmul_peak(dist_info.device, torch.bfloat16 if dist_info.device.type == "cuda"
                                   else torch.float32, seconds=0.3)

        def make_opt(m):
            return build_optimizer(m, lr=schedule(0), weight_decay=recipe.weight_decay,
                                   betas=(recipe.beta1, recipe.beta2), eps=recipe.eps)

        trainer = Trainer(model, make_opt, schedule, batches, tcfg, out_dir=out, eval_batches=evals,
                          dist_info=dist_info, flops_per_token=train_flops_per_token(cfg, int(mean_len)),
                          peak_flops=peak, save_model_fn=save_fn, load_model_fn=load_fn, print_fn=say)
        if dist_info.is_main:
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            tr = data_stats["train"]
            say(f"finetune {recipe.name}: {recipe.method} on {cfg.name} ({n_train / 1e6:.2f}M trainable), "
                f"{len(rows)} {'packed rows' if recipe.packing else 'conversations'} "
                f"({tr['tokens']:,} tokens, {tr['target_tokens']:,} assistant; truncated {tr.get('truncated', 0)}), "
                f"{total_steps} steps x {recipe.batch_size} (micro {micro}, accum {accum}), "
                f"{recipe.schedule} lr {recipe.lr:.2e}; skipped {data_stats['skipped'] or 'none'}")
        summary = trainer.fit()
        summary.update(out_dir=str(out), method=recipe.method, data=data_stats)
        if recipe.method == "lora":
            peft_model = trainer.model
            if dist_info.is_main:
                adapter = save_adapter(peft_model, out / "adapter", base=recipe.base, tokenizer=tok_src)
                summary["adapter"] = str(adapter)
                if recipe.merge:
                    merged = peft_model.merge_and_unload()
                    summary["final"] = str(_save_final(merged.float(), out / "final", tok_src,
                                                       parse_dtype(recipe.save_dtype)))
        else:
            state = full_model_state_dict(trainer.wrapped, dist_info)
            if dist_info.is_main:
                final_model = PocketLM.from_config(cfg, init=False)
                final_model.load_state_dict({k: v.float() for k, v in state.items()})
                summary["final"] = str(_save_final(final_model, out / "final", tok_src,
                                                   parse_dtype(recipe.save_dtype)))
        if dist_info.is_main:
            if summary.get("final"):
                write_intent_meta(recipe, summary["final"])
            png = plot_loss_curve(out / "metrics.jsonl", out / "loss.png", title=f"finetune {recipe.name}")
            summary["plot"] = str(png) if png else None
            tmp = out / ".summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
            os.replace(tmp, out / "summary.json")
            say(f"done: {summary['steps']} steps, loss {summary['first_loss'] or float('nan'):.4f} → "
                f"{summary['last_loss'] or float('nan'):.4f}"
                + (f", eval {summary['eval_loss']:.4f}" if summary.get("eval_loss") is not None else "")
                + (f"; adapter {summary['adapter']}" if summary.get("adapter") else "")
                + (f"; final checkpoint {summary['final']}" if summary.get("final") else ""))
        return summary
    finally:
        teardown_distributed()


# ============================================================================ CLI
def register(sub) -> None:
    p = sub.add_parser(
        "finetune", help="supervised fine-tuning (full or LoRA) on chat data; merge LoRA adapters",
        description="Fine-tune from a recipe YAML or built-in recipe "
                    f"({', '.join(builtin_recipes()) or 'none'}). Rerun the same command to resume. "
                    "`pocketlm finetune merge ADAPTER --out DIR [--base CKPT]` merges a LoRA adapter "
                    "into a standard checkpoint.",
        epilog="Overrides go after RECIPE: --out DIR, --dry-run and --FIELD VALUE for every recipe field "
               "(`pocketlm finetune RECIPE --help` lists them with the recipe's values). Scale out: "
               "torchrun --nproc-per-node N -m pocketlm.cli finetune RECIPE.")
    p.add_argument("recipe", help="recipe YAML file or built-in recipe name (or `merge`)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="--out DIR, --dry-run and --FIELD VALUE ...")
    p.set_defaults(func=_cmd_finetune)


def _cmd_finetune(args) -> int:
    if args.recipe == "merge" and not Path("merge").is_file():
        return _cmd_merge(list(args.overrides or []))
    recipe = load_recipe(args.recipe)
    recipe, ns = apply_overrides(recipe, list(args.overrides or []))
    out = Path(ns.out) if ns.out else Path("runs") / recipe.name
    if ns.dry_run:
        from pocketlm.utils import print_json

        print_json({"out": str(out), "recipe": recipe_to_dict(recipe)})
        return 0
    run_finetune(recipe, out)
    return 0


def _cmd_merge(argv: list[str]) -> int:
    from pocketlm.train.recipe import OverrideParser

    p = OverrideParser(prog="pocketlm finetune merge",
                        description="Merge a LoRA adapter into its base: a standard checkpoint for export/run.")
    p.add_argument("adapter", help="adapter dir (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--out", required=True, help="output checkpoint dir")
    p.add_argument("--base", help="base checkpoint (default: the adapter's base_model_name_or_path)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    a = p.parse_args(argv)
    base = a.base
    if base is None:
        cfg_path = Path(a.adapter) / "adapter_config.json"
        if not cfg_path.is_file():
            raise UserError(f"not a LoRA adapter dir: {a.adapter}")
        base = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError("the adapter does not name its base model; pass --base CKPT")
    from pocketlm.model.checkpoint import is_checkpoint_dir

    if not is_checkpoint_dir(base):
        raise UserError(f"base checkpoint not found: {base}")
    out = merge_adapter(base, a.adapter, a.out, a.dtype)
    print(f"merged {a.adapter} into {base} -> {out}")
    return 0


__all__ = ["FinetuneRecipe", "load_recipe", "recipe_from_dict", "apply_overrides", "load_chat_data",
           "normalize_record", "chat_template_of", "prepare_tokenizer", "assistant_spans", "encode_chat",
           "encode_prompt", "stop_token_ids", "tokenize_conversations", "pack_examples", "collate",
           "SFTBatches", "apply_lora", "lora_state_dict", "save_adapter", "load_adapter", "merge_adapter",
           "run_finetune", "builtin_recipes"]
