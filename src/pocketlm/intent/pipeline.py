"""End-to-end recipes that chain the stages. `intent_tiny`: the whole PhoneLM-Call pipeline on a CPU.

    synthesize DroidCall-format train/test splits (test phrasings and free-text values unseen in training;
      half of the training requests worded compositionally by pocketlm.intent.phrasings),
      90% of the training requests with their free-text values swapped for random words (entity swap),
      half wrapped in openers/closers ("Hey, ...", "... thanks"); training also uses extra phrasings
      that the test split never does (synth.TRAIN_ONLY)
    → byte-level BPE tokenizer on the built-in corpus + the training conversations
    → `pocketlm data prepare` → short `pretrain` (built-in corpus with the intent training text mixed in,
      as PhoneLM's decay phase mixes in function-calling data)
    → `finetune` (full fine-tuning: LoRA on a few-M-parameter model learns far too slowly)
    → greedy generation on the held-out test split, constrained to valid calls (pocketlm.intent.grammar;
      also scored unconstrained) → parse → DroidCall's metrics.

Every stage writes to ``out/`` like the CLI does (``data/``, ``tokenizer/``, ``prepared/``, ``pretrain/``,
``finetune/``, ``predictions.jsonl``, ``result.json``), so each can be inspected or rerun on its own:
``pocketlm finetune intent-tiny --base out/pretrain/final --data out/data/train.jsonl`` and
``pocketlm intent eval --gold out/data/test.jsonl --pred out/predictions.jsonl``.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pocketlm.data.corpus import write_corpus
from pocketlm.data.prepare import prepare
from pocketlm.data.sources import SourceSpec
from pocketlm.data.tokenizer import render_chat, train_tokenizer
from pocketlm.intent.grammar import string_values
from pocketlm.intent.infer import load_runner, predict
from pocketlm.intent.metrics import evaluate, get_matcher
from pocketlm.intent.sft_data import load_chat_data
from pocketlm.intent.specs import load_specs, write_droidcall, write_jsonl
from pocketlm.intent.synth import synthesize
from pocketlm.model.config import ModelConfig
from pocketlm.train.finetune import load_recipe, recipe_from_dict, recipe_to_dict, run_finetune
from pocketlm.train.pretrain import recipe_from_dict as pretrain_recipe, run_pretrain
from pocketlm.utils import atomic_path, atomic_write_json


@dataclass
class IntentTinyConfig:
    n_train: int = 12000  # synthesized training requests
    n_test: int = 200  # held-out requests (DroidCall's test split has 200 too)
    multi_fraction: float = 0.3  # share of two-call (nested or parallel) requests
    augment_fraction: float = 0.9  # training requests whose free-text values are swapped (see augment_values)
    rephrase_fraction: float = 0.5  # training requests wrapped in openers/closers (see augment_phrasing)
    seed: int = 0
    vocab_size: int = 2048
    space_tokens: bool = True  # spaces are tokens of their own: copied words keep their token ids
    split_digits: bool = True  # False: digit runs are BPE-merged ("51"), not one token per digit
    corpus_mb: float = 1.0  # built-in corpus size for the tokenizer and pre-training
    model: dict = field(default_factory=lambda: dict(
        hidden_size=192, num_layers=4, num_heads=6, num_kv_heads=3, intermediate_size=512,
        max_position_embeddings=1024, name="intent-tiny"))
    pretrain_steps: int = 600
    pretrain_seq_len: int = 512
    pretrain_batch: int = 8
    pretrain_lr: float = 3e-3
    precision: str = "fp32"  # pre-training precision (the fine-tune's is in its recipe)
    finetune: dict = field(default_factory=dict)  # overrides of the intent-tiny finetune recipe
    max_new_tokens: int = 96


def _render_texts(convs: list[list[dict]]) -> list[str]:
    return [render_chat(m) for m in convs]


def _write_text_jsonl(texts: list[str], path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return path


def _corpus_words(paths: list[Path], limit: int = 20000) -> list[str]:
    words: set[str] = set()
    for p in paths:
        for f in sorted(Path(p).rglob("*.jsonl")):
            for line in f.read_text(encoding="utf-8").splitlines():
                words.update(w.lower() for w in re.findall(r"[A-Za-z]{3,12}", json.loads(line)["text"]))
                if len(words) >= limit:
                    return sorted(words)
    return sorted(words)


def augment_values(samples: list, specs: dict, words: list[str], fraction: float, seed: int) -> list:
    """Entity-swap augmentation for slot filling: in a `fraction` of the samples, every string argument
    that appears verbatim in the query (names, messages, titles, numbers...) is replaced, in the query
    and the answer alike, by random corpus words / digits of the same shape. Values the function docs
    mention (enums such as "email", "wifi", "image/*") are left alone. Without it a tiny model memorises
    the few training values instead of learning to copy from the request."""
    rng = random.Random(seed)

    def fake(value: str) -> str:
        def word(m):
            w = rng.choice(words)
            t = m.group(0)
            return w.upper() if t.isupper() and len(t) > 1 else (w.capitalize() if t[0].isupper() else w)
        return re.sub(r"\d", lambda m: rng.choice("0123456789"), re.sub(r"[A-Za-z]+", word, value))

    def swap(s) -> None:
        swaps: dict[str, str] = {}

        def visit(v, doc: str):
            if isinstance(v, str):
                if len(v) >= 2 and v in s.query and v.lower() not in doc and not v.startswith("#"):
                    swaps.setdefault(v, fake(v))
                return swaps.get(v, v)
            if isinstance(v, list):
                return [visit(x, doc) for x in v]
            if isinstance(v, dict):
                return {k: visit(x, doc) for k, x in v.items()}
            return v

        for call in s.answers:
            spec = specs.get(call["name"])
            doc = (spec.doc() + "\n" + "\n".join(spec.examples)).lower() if spec else ""
            call["arguments"] = {k: visit(v, doc) for k, v in call["arguments"].items()}
        for old in sorted(swaps, key=len, reverse=True):  # longest first: "John Smith" before "John"
            s.query = s.query.replace(old, swaps[old])

    return _augment_some(samples, fraction, rng, swap)


def _augment_some(samples: list, fraction: float, rng: random.Random, change: Callable[[Any], None]) -> list:
    """`change` applied in place to copies of a random `fraction` of the samples; the rest pass through."""
    out = []
    for s in samples:
        if rng.random() < fraction:
            s = copy.deepcopy(s)
            change(s)
        out.append(s)
    return out


# Words people wrap requests in. Training only: the test split keeps its own phrasings untouched.
_OPENERS = ["Hey, ", "Please ", "Could you ", "Quick one: ", "Hi! ", "Okay, ", "I'd like you to ", "Can you please ",
            "Assistant, ", "Hello, ", "So, ", "Right, ", "Phone, ", "One thing: ", "If you can, ", "Um, "]
_CLOSERS = [" please", ", thanks", " right now", " asap", ", thank you", " now", " if you can", " quickly", "!",
            " when you get a chance", " for me", ", cheers", " real quick", ", ok?", " thanks a lot", " please and thank you"]


def augment_phrasing(samples: list, fraction: float, seed: int) -> list:
    """Wrap a `fraction` of the training requests in openers/closers ("Hey, ...", "... thanks"), so a tiny
    model learns to find the function and the values by their cues rather than by where they sit in the
    sentence. Answers are unchanged (the wrapped values stay verbatim)."""
    rng = random.Random(f"phrasing-{seed}")

    def wrap(s) -> None:
        q = s.query
        if rng.random() < 0.7:
            opener = rng.choice(_OPENERS)
            # "Hey, set an alarm" but "Hey, Maria's number?": a value is copied as written, so keep its case
            values = string_values([c["arguments"] for c in s.answers])
            lower_first = (opener[-2] not in ":!" and len(q) > 1 and q[1].islower()
                           and not any(v and q.startswith(v) for v in values))
            q = opener + (q[0].lower() + q[1:] if lower_first else q)
        if rng.random() < 0.5:
            q = q.rstrip(".?!") + rng.choice(_CLOSERS)
        s.query = q

    return _augment_some(samples, fraction, rng, wrap)


def predict_intents(ckpt: str | os.PathLike, samples: list, specs: dict, *, doc_style: str = "full",
                    k: int = 4, seed: int = 0, max_new_tokens: int = 96,
                    constrain: bool = True) -> tuple[list[dict], dict]:
    """Greedy predictions (DroidCall records + raw output) with the gold + random distractor
    candidates of DroidCall's evaluation, through `pocketlm.intent.infer` (constrained to valid
    calls unless `constrain` is False); returns (predictions, generation stats)."""
    runner = load_runner(str(ckpt), "torch")
    t0 = time.perf_counter()
    preds = predict(runner, samples, specs, seed=seed, k=k, max_new_tokens=max_new_tokens,
                    doc_style=doc_style, progress=False, constrain=constrain)
    dt = time.perf_counter() - t0
    return preds, {"seconds": dt, "generated_tokens": runner.tokens_generated,
                   "tokens_per_s": runner.tokens_generated / runner.seconds if runner.seconds else None}


def function_accuracy(gold: list, preds: list[dict]) -> float:
    """Share of requests whose predicted function names equal the gold ones (as multisets): how often
    the model picks the right functions, whatever their arguments."""
    hits = sum(Counter(c["name"] for c in g.answers) == Counter(c.get("name") for c in p.get("answers") or [])
               for g, p in zip(gold, preds))
    return hits / len(gold) if gold else 0.0


def intent_tiny(out_dir: str | os.PathLike, cfg: IntentTinyConfig | None = None,
                say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the tiny intent pipeline into out_dir; returns accuracy, soft accuracy and stage timings."""
    cfg = cfg or IntentTinyConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    ft = recipe_to_dict(load_recipe("intent-tiny"))
    ft.update(cfg.finetune)

    # 1. data: DroidCall-format splits; test templates and free-text pools are disjoint from train
    t0 = time.perf_counter()
    specs = load_specs()
    train = synthesize(cfg.n_train, seed=cfg.seed, split="train", multi_fraction=cfg.multi_fraction)
    test = synthesize(cfg.n_test, seed=cfg.seed + 1, split="test", multi_fraction=cfg.multi_fraction)
    corpus = write_corpus(out / "corpus" / "builtin", size_mb=cfg.corpus_mb, seed=cfg.seed)
    if cfg.augment_fraction:
        train = augment_values(train, specs, _corpus_words([corpus["web"]]), cfg.augment_fraction, cfg.seed)
    if cfg.rephrase_fraction:
        train = augment_phrasing(train, cfg.rephrase_fraction, cfg.seed)
    write_droidcall(train, out / "data" / "train.jsonl")
    write_droidcall(test, out / "data" / "test.jsonl")
    convs, _ = load_chat_data(str(out / "data" / "train.jsonl"), seed=ft["seed"], candidates=ft["candidates"],
                              doc_style=ft["doc_style"])
    intent_text = _write_text_jsonl(_render_texts(convs), out / "corpus" / "intent" / "train.jsonl")
    times["data"] = time.perf_counter() - t0
    say(f"[data] {len(train)} train / {len(test)} test requests, corpus {cfg.corpus_mb:g} MB "
        f"({times['data']:.1f}s)")

    # 2. tokenizer on the corpus + training conversations (never the test split)
    t0 = time.perf_counter()
    sources = {**{k: Path(v) for k, v in corpus.items()}, "intent": intent_text.parent}
    tok_dir = train_tokenizer(list(sources.values()), cfg.vocab_size, out / "tokenizer",
                              space_tokens=cfg.space_tokens, split_digits=cfg.split_digits)
    # the intent text is rendered ChatML: its <|im_start|>/<|im_end|> must become the special ids
    prepare([SourceSpec(name, paths=[str(p)], special_tokens=name == "intent") for name, p in sources.items()],
            tok_dir, out / "prepared", val_fraction=0.02)
    prepared = out / "prepared"
    times["tokenizer+prepare"] = time.perf_counter() - t0
    say(f"[tokenizer] vocab {cfg.vocab_size}, data prepared ({times['tokenizer+prepare']:.1f}s)")

    # 3. short pre-training: corpus with the intent training text mixed in (PhoneLM's decay-phase idea)
    t0 = time.perf_counter()
    model_cfg = ModelConfig(vocab_size=cfg.vocab_size, **cfg.model)
    model_cfg.save(out / "model.yaml")
    pre = pretrain_recipe(dict(
        name="intent-tiny-base", model=str(out / "model.yaml"), data=str(prepared),
        seq_len=cfg.pretrain_seq_len, batch_size=cfg.pretrain_batch, seed=cfg.seed, precision=cfg.precision,
        weight_decay=0.1, eval_every=0, eval_batches=1, save_every=0, log_every=10,
        phases=[dict(name="stable", mixture={"web": 0.3, "code": 0.1, "math": 0.1, "decay": 0.1, "intent": 0.4},
                     steps=cfg.pretrain_steps, schedule="wsd", warmup_steps=max(1, cfg.pretrain_steps // 10),
                     lr=cfg.pretrain_lr, min_lr=cfg.pretrain_lr / 10, decay_frac=0.2)]))
    pre_summary = run_pretrain(pre, out / "pretrain", print_fn=say)
    times["pretrain"] = time.perf_counter() - t0

    # 4. intent fine-tune (assistant-only loss) from the pre-trained checkpoint
    t0 = time.perf_counter()
    ft.update(base=str(out / "pretrain" / "final"), data=str(out / "data" / "train.jsonl"))
    ft_summary = run_finetune(recipe_from_dict(ft), out / "finetune", print_fn=say)  # + intent.json
    times["finetune"] = time.perf_counter() - t0

    # 5. greedy generation on the held-out split, parse, DroidCall metrics
    t0 = time.perf_counter()
    preds, gen = predict_intents(out / "finetune" / "final", test, specs, doc_style=ft["doc_style"],
                                 k=ft["candidates"], seed=cfg.seed, max_new_tokens=cfg.max_new_tokens)
    write_jsonl(preds, out / "predictions.jsonl")
    matcher = get_matcher("auto", quiet=True)
    res = evaluate(test, preds, specs, matcher=matcher)
    # the same model decoded without the grammar: what the constraint adds
    free_preds, _ = predict_intents(out / "finetune" / "final", test, specs, doc_style=ft["doc_style"],
                                    k=ft["candidates"], seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
                                    constrain=False)
    free = evaluate(test, free_preds, specs, matcher=matcher)
    times["eval"] = time.perf_counter() - t0
    result = {
        "accuracy": res["accuracy"], "soft_accuracy": res["soft_accuracy"], "n_test": res["n"],
        "function_accuracy": function_accuracy(test, preds),
        "unconstrained": {"accuracy": free["accuracy"], "soft_accuracy": free["soft_accuracy"],
                          "function_accuracy": function_accuracy(test, free_preds),
                          "unparsable": len(free["bad_predictions"])},
        "n_train": len(train), "matcher": res["matcher"], "unparsable": len(res["bad_predictions"]),
        "seconds": {k: round(v, 1) for k, v in times.items()}, "total_seconds": round(sum(times.values()), 1),
        "pretrain": {k: pre_summary.get(k) for k in ("steps", "first_loss", "last_loss", "tokens_seen")},
        "finetune": {k: ft_summary.get(k) for k in ("steps", "first_loss", "last_loss", "eval_loss")},
        "generation": gen, "config": asdict(cfg), "finetune_recipe": ft,
        "failures": [p for p in res.get("per_sample", []) if not p["correct"]][:10],
    }
    atomic_write_json(out / "result.json", result)
    shutil.rmtree(out / "corpus" / "builtin", ignore_errors=True)  # regenerated on demand; keep out/ small
    return result


__all__ = ["IntentTinyConfig", "function_accuracy", "intent_tiny", "predict_intents"]
