"""Run a model on code_short prompts: greedy completion with our PyTorch model (checkpoint dir) or
llama.cpp (GGUF file), the same chat template either way (the tokenizer's, i.e.
pocketlm.data.tokenizer.CHAT_TEMPLATE for checkpoints we save)."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from pocketlm.errors import UserError
from pocketlm.intent.grammar import CallGrammar, GrammarChooser, load_intent_meta
from pocketlm.intent.prompt import build_prompt, choose_candidates, parse_calls, retrieve
from pocketlm.intent.specs import FunctionSpec, Sample


class Runner:
    """``complete(messages) -> text``: greedy continuation of the chat up to the end-of-turn token,
    constrained by a `CallGrammar` when one is given. ``meta``: the fine-tune's intent.json (prompt
    style, copy arguments), {} if unknown."""

    backend = "?"
    meta: dict = {}

    def complete(self, messages: list[dict], max_new_tokens: int = 128, grammar: CallGrammar | None = None) -> str:
        raise NotImplementedError

    def _chooser(self, grammar: CallGrammar | None, stop_ids) -> GrammarChooser | None:
        if grammar is None:
            return None
        if not hasattr(self, "_pieces"):
            self._pieces = [self._token_text(i) for i in range(self._vocab_size())]
        return GrammarChooser(grammar, self._pieces.__getitem__, stop_ids)


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, ckpt_dir: str):
        from pocketlm.model.checkpoint import is_checkpoint_dir, load_model, load_tokenizer

        if not os.path.isdir(ckpt_dir) or not is_checkpoint_dir(ckpt_dir):
            raise UserError(f"{ckpt_dir} is not a pocketlm checkpoint directory")
        self.tok = load_tokenizer(ckpt_dir)
        if self.tok is None:
            raise UserError(f"checkpoint {ckpt_dir} has no tokenizer (save it with save_checkpoint(tokenizer=...))")
        if not getattr(self.tok, "chat_template", None):
            raise UserError(f"the tokenizer in {ckpt_dir} has no chat_template")
        self.model = load_model(ckpt_dir).eval()
        self.meta = load_intent_meta(ckpt_dir)
        self.stop_ids = {i for i in (self.tok.convert_tokens_to_ids("<|im_end|>"), self.tok.eos_token_id)
                         if isinstance(i, int) and i >= 0 and i != self.tok.unk_token_id}
        self.max_context = self.model.config.max_position_embeddings
        self.tokens_generated = 0
        self.seconds = 0.0

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _vocab_size(self) -> int:
        return self.model.config.vocab_size

    def _token_text(self, tok: int) -> str:
        return self.tok.decode([tok]) if tok < len(self.tok) else ""

    def complete(self, messages: list[dict], max_new_tokens: int = 128, grammar: CallGrammar | None = None) -> str:
        from pocketlm.runtime.sampling import generate

        ids = self.prompt_ids(messages)
        if len(ids) >= self.max_context:
            raise UserError(f"prompt is {len(ids)} tokens but the model's context is {self.max_context}")
        max_new_tokens = min(max_new_tokens, self.max_context - len(ids))
        t0 = time.perf_counter()
        out = generate(self.model, ids, max_new_tokens=max_new_tokens, stop_ids=self.stop_ids,
                       choose=self._chooser(grammar, self.stop_ids))
        self.seconds += time.perf_counter() - t0
        self.tokens_generated += len(out)
        return self.tok.decode(out, skip_special_tokens=True)


class LlamaCppRunner(Runner):
    backend = "llamacpp"

    def __init__(self, gguf_path: str, n_ctx: int = 0, tokenizer_dir: str | None = None):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise UserError("the llamacpp backend needs llama-cpp-python (pip install llama-cpp-python)") from None
        if not os.path.isfile(gguf_path):
            raise UserError(f"GGUF file not found: {gguf_path}")
        # n_ctx=0: the model's own training context
        self.llm = Llama(model_path=gguf_path, n_ctx=n_ctx, verbose=False, seed=0)
        self.tok = None
        if tokenizer_dir:
            from pocketlm.model.checkpoint import load_tokenizer

            self.tok = load_tokenizer(tokenizer_dir)
            self.meta = load_intent_meta(tokenizer_dir)
        self.tokens_generated = 0
        self.seconds = 0.0

    def _vocab_size(self) -> int:
        return self.llm.n_vocab()

    def _token_text(self, tok: int) -> str:
        return self.llm.detokenize([tok]).decode("utf-8", errors="replace")

    def _processor(self, grammar: CallGrammar | None, n_prompt: int):
        """A llama-cpp-python logits processor that keeps only the grammar's choice."""
        import numpy as np
        import torch

        stops = [t for t in (self.llm.token_eos(), *self.llm.tokenize(b"<|im_end|>", add_bos=False, special=True))
                 if t >= 0][:2]
        chooser = self._chooser(grammar, stops)
        if chooser is None:
            return None

        def process(input_ids, scores):
            chooser.text = "".join(self._pieces[t] for t in input_ids[n_prompt:])
            tok = chooser(torch.from_numpy(np.asarray(scores, dtype=np.float32)))
            keep = np.full_like(scores, -np.inf)
            keep[stops[0] if tok is None else tok] = 0.0
            return keep
        return [process]

    def complete(self, messages: list[dict], max_new_tokens: int = 128, grammar: CallGrammar | None = None) -> str:
        from llama_cpp import LogitsProcessorList

        if self.tok is not None:
            text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # our ChatML template, rendered the same way as transformers does
            from pocketlm.data.tokenizer import render_chat

            text = render_chat(messages, add_generation_prompt=True)
        n_prompt = len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        if n_prompt >= self.llm.n_ctx():
            raise UserError(f"prompt is {n_prompt} tokens but the model's context is {self.llm.n_ctx()}")
        max_new_tokens = min(max_new_tokens, self.llm.n_ctx() - n_prompt)
        t0 = time.perf_counter()
        processors = self._processor(grammar, n_prompt)
        res = self.llm.create_completion(text, max_tokens=max_new_tokens, temperature=0.0, top_k=1,
                                         stop=["<|im_end|>", "<|endoftext|>"],
                                         logits_processor=LogitsProcessorList(processors) if processors else None)
        self.seconds += time.perf_counter() - t0
        self.tokens_generated += res.get("usage", {}).get("completion_tokens", 0)
        return res["choices"][0]["text"]


def load_runner(model: str, backend: str = "auto", tokenizer_dir: str | None = None) -> Runner:
    """``auto``: a .gguf file → llama.cpp, anything else → our PyTorch model."""
    if backend == "auto":
        backend = "llamacpp" if str(model).endswith(".gguf") else "torch"
    if backend == "torch":
        return TorchRunner(model)
    if backend == "llamacpp":
        return LlamaCppRunner(model, tokenizer_dir=tokenizer_dir)
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
