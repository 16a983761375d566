"""Token generation for PocketLM: greedy, temperature, top-k, top-p and stop tokens, with a KV cache.

`stream()` yields tokens as they are produced (the first one right after prefill, so a caller can
time the first token); `generate()` collects them. `sample_next()` works on any logits vector and
is shared with the llama.cpp backend so both sample identically.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import torch

from pocketlm.errors import UserError


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> int:
    """One token id from a [vocab] logits vector; temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float() / temperature
    if top_k and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (always keep the first)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.scatter(0, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def stream(model, prompt_ids: Sequence[int], max_new_tokens: int = 64, temperature: float = 0.0,
           top_k: int = 0, top_p: float = 1.0, stop_ids: Iterable[int] = (), seed: int = 0,
           cache=None, choose: Callable[[torch.Tensor], int | None] | None = None) -> Iterator[int]:
    """Yield up to max_new_tokens new tokens; stops after yielding nothing more once a stop id is
    sampled (the stop token itself is not yielded). `cache`: a KVCache to reuse (reset here).
    `choose(logits) -> token or None (stop)` replaces sampling, for constrained decoding."""
    from pocketlm.model.decoder import KVCache

    check_sampling(temperature, top_k, top_p)
    cfg = model.config
    prompt = list(prompt_ids)
    if not prompt:
        raise UserError("the prompt is empty; give at least one token")
    bad = [t for t in prompt if not 0 <= t < cfg.vocab_size]
    if bad:
        raise UserError(f"prompt token id {bad[0]} is outside the vocabulary (0..{cfg.vocab_size - 1})")
    # the last sampled token is never fed back, hence the -1
    need = len(prompt) + max(max_new_tokens - 1, 0)
    if need > cfg.max_position_embeddings:
        raise UserError(f"prompt ({len(prompt)} tokens) + {max_new_tokens} new tokens exceeds the model's "
                        f"maximum context of {cfg.max_position_embeddings}")
    param = next(model.parameters())
    if cache is None or cache.max_len < need:
        cache = KVCache(cfg, 1, max(need, 1), param.dtype, param.device)
    cache.pos = 0
    stops = set(stop_ids)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    logits = model(torch.tensor([prompt], device=param.device), cache=cache, last_only=True)[0, -1]
    for i in range(max_new_tokens):
        tok = choose(logits) if choose is not None else sample_next(logits, temperature, top_k, top_p, gen)
        if tok is None or tok in stops:
            return
        yield tok
        if i + 1 < max_new_tokens:
            logits = model(torch.tensor([[tok]], device=param.device), cache=cache, last_only=True)[0, -1]


def generate(model, prompt_ids: Sequence[int], max_new_tokens: int = 64, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, stop_ids: Iterable[int] = (), seed: int = 0,
             choose: Callable[[torch.Tensor], int | None] | None = None) -> list[int]:
    """New token ids (without the prompt and without the stop token)."""
    return list(stream(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, stop_ids, seed,
                       choose=choose))
