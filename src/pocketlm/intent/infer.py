"""Run a model on code_short prompts: greedy completion on the generation engine
(pocketlm.runtime.engine) with our PyTorch model (checkpoint dir) or llama.cpp (GGUF file), the same
chat template either way (the tokenizer's, i.e. pocketlm.data.tokenizer.CHAT_TEMPLATE for
checkpoints we save), optionally constrained to valid calls by the intent grammar."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import torch

from pocketlm.errors import UserError
from pocketlm.intent.grammar import (INTENT_META, CallGrammar, GrammarChooser, PieceIndex, load_intent_meta,
                                     parse_intent_meta)
from pocketlm.intent.prompt import build_prompt, choose_candidates, parse_calls, retrieve
from pocketlm.intent.specs import FunctionSpec, Sample
from pocketlm.model.checkpoint import is_checkpoint_dir
from pocketlm.runtime.engine import Runtime, load_runtime
from pocketlm.runtime.gguf import read_gguf


def grammar_processor(grammar: CallGrammar, index: PieceIndex, stop_ids: list[int]):
    """A logits processor that leaves only the grammar's choice (or the end of turn) to sample."""
    if not stop_ids:
        raise UserError("constrained decoding needs an end-of-turn token, and this model's tokenizer has none")
    chooser = GrammarChooser(grammar, index.pieces.__getitem__, stop_ids, index=index)

    def process(tokens: list[int], logits: torch.Tensor) -> torch.Tensor:
        tok = chooser(logits)
        keep = torch.full_like(logits, float("-inf"))
        keep[stop_ids[0] if tok is None else tok] = 0.0
        return keep
    return process


class Runner:
    """An engine runtime plus the fine-tune's intent.json (``meta``: prompt style, copy arguments;
    {} if unknown) and running generation stats. ``complete(messages) -> text``: greedy continuation
    of the chat up to the end of turn, constrained by a `CallGrammar` when one is given."""

    def __init__(self, runtime: Runtime, meta: dict):
        self.runtime = runtime
        self.meta = meta
        self.backend = runtime.backend
        self.tokens_generated = 0
        self.seconds = 0.0
        self._index: PieceIndex | None = None

    def complete(self, messages: list[dict], max_new_tokens: int = 128, grammar: CallGrammar | None = None) -> str:
        rt = self.runtime
        ids = rt.encode_messages(messages)
        if len(ids) >= rt.n_ctx:
            raise UserError(f"prompt is {len(ids)} tokens but the model's context is {rt.n_ctx}")
        stops = rt.end_of_turn_ids()
        if grammar is not None and self._index is None:
            self._index = PieceIndex(rt.token_pieces())
        processor = grammar_processor(grammar, self._index, stops) if grammar is not None else None
        t0 = time.perf_counter()
        result = rt.generate(ids, min(max_new_tokens, rt.n_ctx - len(ids)), stop_ids=stops,
                             logits_processor=processor)
        self.seconds += time.perf_counter() - t0
        self.tokens_generated += len(result.tokens)
        return result.text

    def close(self) -> None:
        self.runtime.close()


def load_runner(model: str, backend: str = "auto", tokenizer_dir: str | None = None,
                n_ctx: int | None = None) -> Runner:
    """``auto``: a .gguf file → llama.cpp, anything else → our PyTorch model. ``tokenizer_dir``: the
    checkpoint a GGUF came from (its tokenizer and intent.json; by default the GGUF's own). ``n_ctx``: the
    runtime context (None: the model's maximum)."""
    if backend == "auto":
        backend = "llamacpp" if str(model).endswith(".gguf") else "torch"
    if backend == "torch":
        if not os.path.isdir(model) or not is_checkpoint_dir(model):
            raise UserError(f"{model} is not a pocketlm checkpoint directory")
        rt = load_runtime(model, backend="torch", n_ctx=n_ctx)
        if rt.tokenizer is None:
            raise UserError(f"checkpoint {model} has no tokenizer (save it with save_checkpoint(tokenizer=...))")
        if not getattr(rt.tokenizer, "chat_template", None):
            raise UserError(f"the tokenizer in {model} has no chat_template")
        return Runner(rt, load_intent_meta(model))
    if backend == "llamacpp":
        if not os.path.isfile(model):
            raise UserError(f"GGUF file not found: {model}")
        rt = load_runtime(model, backend="llamacpp", n_ctx=n_ctx, tokenizer=tokenizer_dir)
        # an exported intent model carries its intent.json inside the GGUF (pocketlm.runtime.gguf)
        meta = load_intent_meta(tokenizer_dir) if tokenizer_dir else \
            parse_intent_meta(read_gguf(model)["files"].get(INTENT_META))
        return Runner(rt, meta)
    raise UserError(f"unknown backend {backend!r} (torch or llamacpp)")


def run_query(runner: Runner, query: str, specs: dict[str, FunctionSpec],
              candidates: list[FunctionSpec] | None = None, k: int = 4,
              max_new_tokens: int = 128, doc_style: str = "full", constrain: bool = True) -> dict:
    """One request end to end: retrieve candidates, prompt, generate (constrained to valid calls of
    the candidates unless `constrain` is False), parse."""
    candidates = candidates or retrieve(query, specs, k=k)
    grammar = CallGrammar(candidates, query, runner.meta.get("copy_args", ())) if constrain else None
    output = runner.complete(build_prompt(query, candidates, doc_style=doc_style), max_new_tokens, grammar)
    calls, err = parse_calls(output, specs)
    return {"query": query, "candidates": [c.name for c in candidates], "output": output,
            "calls": calls, "error": err}


def predict(runner: Runner, samples: list[Sample], specs: dict[str, FunctionSpec], seed: int = 0,
            k: int = 4, candidates: str = "gold", max_new_tokens: int = 128, doc_style: str = "full",
            progress: bool = True, constrain: bool = True) -> list[dict]:
    """Prediction records (DroidCall format + raw output) for gold samples, in order.
    ``candidates="gold"``: gold functions + random distractors, as DroidCall's evaluation does;
    ``"retrieve"``: the lexical retriever (what ``pocketlm intent MODEL TEXT`` uses)."""
    rng = random.Random(seed)
    out = []
    it: Any = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="intent predict", unit="query")
    for s in it:
        if s.error:
            out.append({"query": s.query, "answers": [], "output": "", "error": f"gold line bad: {s.error}"})
            continue
        cands = (choose_candidates(s, specs, k=k, rng=rng) if candidates == "gold"
                 else retrieve(s.query, specs, k=k))
        r = run_query(runner, s.query, specs, cands, k, max_new_tokens, doc_style, constrain)
        out.append({"query": s.query, "answers": r["calls"], "output": r["output"], "error": r["error"]})
    return out
