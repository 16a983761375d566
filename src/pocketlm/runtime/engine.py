"""The generation engine: run any model on our torch model or on llama.cpp, stream, time it.

`load_runtime(spec, backend)` takes a checkpoint dir, a .gguf file, a preset, a config file, a
ModelConfig or a PocketLM. Both backends share one loop built on two primitives, `_eval_prompt` and
`_eval_token`, so their timings and sampling are directly comparable:

- `Runtime.stream_generate(prompt ids or chat messages)` yields one `GenerationResponse` per new
  token, then a last one with `finish_reason` ("stop" or "length") and the call's TTFT, prompt
  tok/s, generation tok/s and peak memory (mlx-lm style). `generate()` collects it.
- `prefill()` / `decode()` are the timing primitives; `measure()` (pocketlm.runtime.timing, also
  importable from here) is the protocol the benchmarks and the search use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from pocketlm.data.tokenizer import IM_END
from pocketlm.errors import UserError
from pocketlm.model.checkpoint import is_checkpoint_dir, load_checkpoint, load_tokenizer, parse_dtype
from pocketlm.model.config import ModelConfig
from pocketlm.model.presets import resolve_config
from pocketlm.model.decoder import KVCache, PocketLM
from pocketlm.runtime.gguf import QUANTS, export_gguf, llamacpp_problems, read_gguf
from pocketlm.runtime.llamacpp import open_llama
from pocketlm.runtime.sampling import check_sampling, sample_next
from pocketlm.runtime.timing import peak_rss_mb

BACKENDS = ("torch", "llamacpp")

# logits_processor(generated_tokens, logits [vocab] float tensor) -> logits to sample from
LogitsProcessor = Callable[[list, torch.Tensor], torch.Tensor]


@dataclass
class GenerationResponse:
    """One step of `stream_generate`: the new token and its text, or (token None) the final summary.

    Stats are running figures for the call so far; on the final response they are the call's."""

    token: int | None
    text: str  # text delta ("" while a multi-byte character is incomplete or without a tokenizer)
    finish_reason: str | None  # None while generating; "stop" (a stop token) or "length" at the end
    prompt_tokens: int
    generation_tokens: int
    ttft_s: float
    prompt_tok_s: float
    gen_tok_s: float
    peak_mem_mb: float


@dataclass
class GenerationResult:
    tokens: list[int]
    text: str | None
    prompt_tokens: int
    prompt_tok_s: float
    gen_tok_s: float
    ttft_s: float
    peak_mem_mb: float
    stopped: bool = False  # ended on a stop token (rather than max_new_tokens)

    @classmethod
    def collect(cls, tokens: list[int], last: GenerationResponse, text: str | None) -> "GenerationResult":
        """The result of a stream: its tokens, their text and the final response's stats."""
        return cls(tokens=tokens, text=text, prompt_tokens=last.prompt_tokens, prompt_tok_s=last.prompt_tok_s,
                   gen_tok_s=last.gen_tok_s, ttft_s=last.ttft_s, peak_mem_mb=last.peak_mem_mb,
                   stopped=last.finish_reason == "stop")

    def summary(self) -> str:
        return (f"prompt: {self.prompt_tokens} tokens, {self.prompt_tok_s:.1f} tok/s | "
                f"generation: {len(self.tokens)} tokens, {self.gen_tok_s:.1f} tok/s | "
                f"peak memory: {self.peak_mem_mb:.1f} MB")


# ---------------------------------------------------------------------------------------------
# runtimes

class Runtime:
    """A loaded model ready to prefill, decode and generate (batch 1)."""

    backend: str = ""

    def __init__(self, config: ModelConfig | None, n_ctx: int, threads: int, tokenizer: Any = None):
        self.config = config
        self.n_ctx = n_ctx
        self.threads = threads
        self.tokenizer = tokenizer  # a Hugging Face tokenizer, or None
        self.quant: str | None = None
        self.pos = 0
        self._logits: Any = None
        self._reserve = n_ctx  # positions the next _eval_prompt must make room for
        self._pieces: list[str] | None = None

    # -- backend primitives ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def _eval_prompt(self, ids: list[int]) -> Any:
        """Reset the state, evaluate the prompt, return the last position's logits."""
        raise NotImplementedError

    def _eval_token(self, tok: int) -> Any:
        raise NotImplementedError

    def _logits_tensor(self, logits: Any) -> torch.Tensor:
        return logits

    def _argmax(self, logits: Any) -> int:
        return int(logits.argmax())

    def close(self) -> None:
        pass

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- tokenizer ---------------------------------------------------------------------------
    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer is not None

    def encode(self, text: str, chat: bool = False, system: str | None = None) -> list[int]:
        """Token ids of `text`, or with chat=True of a one-turn chat prompt (generation prompt added)."""
        if chat:
            return self.encode_messages(([{"role": "system", "content": system}] if system else [])
                                        + [{"role": "user", "content": text}])
        if self.tokenizer is None:
            raise UserError("this model has no tokenizer; pass token ids with --prompt-ids 1,2,3")
        return list(self.tokenizer.encode(text))

    def encode_messages(self, messages: list[dict]) -> list[int]:
        """The inference prompt of a conversation, rendered with the model's chat template."""
        if self.tokenizer is None:
            raise UserError("this model has no tokenizer; pass token ids with --prompt-ids 1,2,3")
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError("this model's tokenizer has no chat template; drop --chat")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode_text(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            raise UserError("this model has no tokenizer to turn ids into text")
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_text(self, tok: int) -> str:
        """The text of one token on its own ("" outside the tokenizer's vocabulary)."""
        if self.tokenizer is None:
            raise UserError("this model has no tokenizer to turn ids into text")
        return self.tokenizer.decode([tok]) if tok < len(self.tokenizer) else ""

    def token_pieces(self) -> list[str]:
        """token_text of every id (cached): what constrained decoders check candidate tokens with."""
        if self._pieces is None:
            self._pieces = [self.token_text(i) for i in range(self.vocab_size)]
        return self._pieces

    def special_ids(self, *tokens: str) -> list[int]:
        """Ids of special tokens (eos plus the named ones) that exist in the tokenizer."""
        out = []
        eos = getattr(self.tokenizer, "eos_token_id", None) if self.tokenizer is not None else None
        if eos is None and self.config is not None:
            eos = self.config.eos_token_id
        if eos is not None:
            out.append(int(eos))
        if self.tokenizer is not None:
            vocab = self.tokenizer.get_vocab()
            out += [vocab[t] for t in tokens if t in vocab]
        return sorted(set(out))

    def end_of_turn_ids(self) -> list[int]:
        """Tokens that end an assistant turn: eos plus the chat template's end token."""
        return self.special_ids(IM_END)

    # -- shared loop -------------------------------------------------------------------------
    def _check(self, ids: Sequence[int], extra: int) -> list[int]:
        ids = [int(t) for t in ids]
        if not ids:
            raise UserError("the prompt is empty; give at least one token")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise UserError(f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        self._check_room(len(ids) + extra, "prompt")
        return ids

    def _check_room(self, total: int, what: str) -> None:
        limit = self.n_ctx
        model_max = self.config.max_position_embeddings if self.config is not None else limit
        if total > min(limit, model_max):
            which = (f"the model's maximum context of {model_max}" if model_max <= limit
                     else f"the runtime context of {limit} (raise --n-ctx)")
            raise UserError(f"{what} needs {total} positions, more than {which}")

    def prefill(self, token_ids: Sequence[int]) -> float:
        """Reset the state and evaluate the prompt (KV cache left filled); returns seconds."""
        ids = self._check(token_ids, 0)
        self._reserve = self.n_ctx
        t0 = time.perf_counter()
        self._logits = self._eval_prompt(ids)
        dt = time.perf_counter() - t0
        self.pos = len(ids)
        return dt

    def score(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[list[float], bool]:
        """Teacher-forced log-probability of each continuation token after `context`, and whether greedy
        decoding would have produced the whole continuation (lm-eval's loglikelihood on this engine)."""
        ids = self._check(context, len(continuation))
        self._reserve = len(ids) + len(continuation)
        logits = self._eval_prompt(ids)
        logprobs, greedy = [], True
        for i, tok in enumerate(continuation):
            row = torch.log_softmax(self._logits_tensor(logits).float(), dim=-1)
            logprobs.append(float(row[int(tok)]))
            greedy = greedy and int(row.argmax()) == int(tok)
            if i + 1 < len(continuation):
                logits = self._eval_token(int(tok))
        self._logits = None  # the state is no longer a prefill the caller asked for
        return logprobs, greedy

    def decode(self, n_tokens: int) -> list[float]:
        """Greedy continuation of n_tokens from the current state; per-token seconds."""
        if self._logits is None:
            raise UserError("decode() needs a prefill() first")
        self._check_room(self.pos + n_tokens, f"decoding {n_tokens} tokens after {self.pos}")
        times = []
        for _ in range(n_tokens):
            tok = self._argmax(self._logits)
            t0 = time.perf_counter()
            self._logits = self._eval_token(tok)
            times.append(time.perf_counter() - t0)
            self.pos += 1
        return times

    def stream_generate(self, prompt: Sequence[int] | list[dict], max_new_tokens: int = 64,
                        temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                        stop_ids: Sequence[int] | None = None,
                        logits_processor: LogitsProcessor | None = None) -> Iterator[GenerationResponse]:
        """Sample up to max_new_tokens from token ids or chat messages, one response per new token,
        then a final one (token None) with the finish reason and the call's stats.

        stop_ids: tokens that end generation (never yielded); default: the end-of-turn tokens for
        chat messages, none for token ids. logits_processor sees the generated tokens and the logits
        before sampling (constrained decoding)."""
        check_sampling(temperature, top_k, top_p)
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        chat = len(prompt) > 0 and isinstance(prompt[0], dict)
        ids = self._check(self.encode_messages(prompt) if chat else prompt, max_new_tokens - 1)
        if stop_ids is None:
            stop_ids = self.end_of_turn_ids() if chat else ()
        stops = {int(s) for s in stop_ids}
        show = self.has_tokenizer
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        tokens: list[int] = []
        shown = ""
        self._reserve = len(ids) + max_new_tokens - 1  # the last sampled token is never fed back
        t0 = time.perf_counter()
        logits = self._eval_prompt(ids)
        self.pos = len(ids)
        t_first = None
        finish = "length"

        def response(tok: int | None, text: str, reason: str | None) -> GenerationResponse:
            now = time.perf_counter()
            ttft = (t_first or now) - t0
            # tokens after the first, over the time since it (a stop token counts: it was decoded)
            n_decoded = max(len(tokens) - 1, 0) + (1 if reason == "stop" and tokens else 0)
            gen_s = now - (t_first or now)
            return GenerationResponse(
                token=tok, text=text, finish_reason=reason, prompt_tokens=len(ids),
                generation_tokens=len(tokens), ttft_s=ttft, prompt_tok_s=len(ids) / ttft if ttft > 0 else 0.0,
                gen_tok_s=n_decoded / gen_s if gen_s > 0 and n_decoded else 0.0, peak_mem_mb=peak_rss_mb())

        for i in range(max_new_tokens):
            if logits_processor is not None:
                logits = logits_processor(tokens, self._logits_tensor(logits))
            tok = (self._argmax(logits) if temperature == 0 else
                   sample_next(self._logits_tensor(logits), temperature, top_k, top_p, gen))
            if t_first is None:
                t_first = time.perf_counter()
            if tok in stops:
                finish = "stop"
                break
            tokens.append(tok)
            delta = ""
            if show:
                text = self.decode_text(tokens)
                if not text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
                    delta, shown = text[len(shown):] if text.startswith(shown) else "", text
            yield response(tok, delta, None)
            if i + 1 < max_new_tokens:
                logits = self._eval_token(tok)
                self.pos += 1
        self._logits = logits
        rest = ""
        if show and tokens:
            text = self.decode_text(tokens)
            rest = text[len(shown):] if text.startswith(shown) else ""
        yield response(None, rest, finish)

    def generate(self, prompt: Sequence[int] | list[dict], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, stop_ids: Sequence[int] | None = None, seed: int = 0,
                 logits_processor: LogitsProcessor | None = None) -> GenerationResult:
        """`stream_generate` collected: the new tokens (without the stop token), text and stats."""
        tokens = []
        for r in self.stream_generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop_ids,
                                      logits_processor):
            if r.token is not None:
                tokens.append(r.token)
        return GenerationResult.collect(tokens, r, self.decode_text(tokens) if self.has_tokenizer else None)


class TorchRuntime(Runtime):
    backend = "torch"

    def __init__(self, model, n_ctx: int, threads: int, tokenizer: Any = None):
        super().__init__(model.config, n_ctx, threads, tokenizer)
        torch.set_num_threads(threads)
        self.model = model.eval()
        self.dtype = next(model.parameters()).dtype
        self.quant = str(self.dtype).removeprefix("torch.")
        self._cache = None

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def _eval_prompt(self, ids):
        need = max(len(ids), self._reserve)
        if self._cache is None or self._cache.max_len < need:  # grown on demand, not n_ctx up front
            self._cache = KVCache(self.config, 1, need, self.dtype)
        self._cache.pos = 0
        with torch.inference_mode():
            return self.model(torch.tensor([ids]), cache=self._cache, last_only=True)[0, -1]

    def _eval_token(self, tok):
        with torch.inference_mode():
            return self.model(torch.tensor([[tok]]), cache=self._cache, last_only=True)[0, -1]

    def close(self) -> None:
        self._cache = None


class LlamaCppRuntime(Runtime):
    backend = "llamacpp"

    def __init__(self, path: str | os.PathLike, n_ctx: int | None, threads: int, seed: int = 0,
                 tokenizer: Any = None, cleanup: str | None = None):
        info = read_gguf(path)  # validates: a damaged file is a UserError, not a segfault
        cfg = info["config"]
        if cfg is not None:  # None: the model's own context
            n_ctx = min(n_ctx or cfg.max_position_embeddings, cfg.max_position_embeddings)
        n_ctx = n_ctx or 2048
        super().__init__(cfg, n_ctx, threads, tokenizer)
        self.path = Path(path)
        self.quant = info["quant"]
        self.info = info
        self._cleanup = cleanup
        self.llm = open_llama(path, n_ctx=n_ctx, threads=threads, seed=seed)
        self._n_vocab = self.llm.n_vocab()
        self._gguf_vocab = info["has_vocab"] and not info["placeholder_vocab"]

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def _read_logits(self) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _eval_prompt(self, ids):
        self.llm.reset()
        self.llm.eval(ids)
        return self._read_logits()

    def _eval_token(self, tok):
        self.llm.eval([tok])
        return self._read_logits()

    def _logits_tensor(self, logits):
        return torch.from_numpy(np.array(logits, dtype=np.float32))

    # tokenizer: the checkpoint's HF tokenizer when we exported it, else the GGUF's own vocabulary
    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer is not None or self._gguf_vocab

    def _need_vocab(self) -> None:
        if not self._gguf_vocab:
            raise UserError("this model has a placeholder vocabulary (random weights, no tokenizer); "
                            "pass token ids with --prompt-ids 1,2,3")

    def encode(self, text: str, chat: bool = False, system: str | None = None) -> list[int]:
        if self.tokenizer is not None or chat:
            return super().encode(text, chat, system)
        self._need_vocab()
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def encode_messages(self, messages: list[dict]) -> list[int]:
        if self.tokenizer is not None:
            return super().encode_messages(messages)
        self._need_vocab()
        template = self.info.get("chat_template")
        if not template:
            raise UserError("this GGUF has no chat template; drop --chat")
        import jinja2

        text = jinja2.Environment().from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def decode_text(self, ids: Sequence[int]) -> str:
        if self.tokenizer is not None:
            return super().decode_text(ids)
        if not self._gguf_vocab:
            raise UserError("this model has a placeholder vocabulary; no text to show")
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def token_text(self, tok: int) -> str:
        if self.tokenizer is not None:
            return super().token_text(tok)
        self._need_vocab()
        return self.llm.detokenize([tok]).decode("utf-8", errors="replace")

    def special_ids(self, *tokens: str) -> list[int]:
        if self.tokenizer is not None:
            return super().special_ids(*tokens)
        if not self._gguf_vocab:
            return super().special_ids()  # the config's eos, if any
        out = {int(self.llm.token_eos())}
        for t in tokens:
            ids = self.llm.tokenize(t.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                out.add(ids[0])
        return sorted(i for i in out if i >= 0)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
        if self._cleanup:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


# ---------------------------------------------------------------------------------------------
# loading any model spec

def _is_gguf(spec: str) -> bool:
    p = Path(spec)
    if p.suffix == ".gguf":
        return True
    if p.is_file():
        with open(p, "rb") as f:
            return f.read(4) == b"GGUF"
    return False


def _has_weights(spec: str) -> bool:
    d = Path(spec)
    return is_checkpoint_dir(d) and any((d / f).exists() for f in (
        "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))


def gguf_cache_name(cfg: ModelConfig, quant: str, seed: int) -> str:
    """File name of a random-weight export in a cache dir: the shape, quant, seed and a hash of the
    remaining fields (rope, context, eps) so a cached file always matches its config exactly."""
    rest = {k: v for k, v in cfg.to_dict().items() if k not in ("name", "source")}
    digest = hashlib.sha1(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8]
    return f"{cfg.shape_key()}-{quant}-s{seed}-{digest}.gguf"


def load_runtime(spec: Any, backend: str = "llamacpp", quant: str = "q4_0", threads: int | None = None,
                 n_ctx: int | None = 2048, dtype: str = "float32", seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, tokenizer: Any = None) -> Runtime:
    """A runtime for a checkpoint dir, .gguf file, preset name, config file, ModelConfig or PocketLM.

    torch: our model in `dtype` (random weights from `seed` for a preset/config). llamacpp: a GGUF
    file as is, or an export in `quant` (to `cache_dir` for configs, reused across calls; else a
    temp dir removed on close()). Threads default to all cores; n_ctx is capped at the model's max
    (None: the model's max). tokenizer: a tokenizer dir (or loaded tokenizer) for a GGUF file, used
    instead of its own vocabulary so both backends encode and decode identically.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    threads = int(threads or os.cpu_count() or 1)
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    if n_ctx is not None and n_ctx < 1:
        raise UserError(f"n_ctx must be >= 1, got {n_ctx}")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)
    model = cfg = ckpt = gguf_path = None
    if isinstance(spec, ModelConfig):
        cfg = spec
    elif isinstance(spec, PocketLM):
        model, cfg = spec, spec.config
    else:
        s = str(spec)
        if _is_gguf(s):
            gguf_path = s
        elif _has_weights(s):
            ckpt = s
        else:
            cfg = resolve_config(s)

    if backend == "torch":
        if gguf_path is not None:
            raise UserError(f"the torch backend can't run a GGUF file ({gguf_path}); use --backend llamacpp "
                            "or pass the checkpoint directory")
        tdtype = parse_dtype(dtype)
        if ckpt is not None:
            model = load_checkpoint(ckpt, dtype=tdtype)
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(ckpt)
        elif model is None:
            model = PocketLM.from_config(cfg, seed=seed, dtype=tdtype)
        else:
            model = model.to(tdtype)
        limit = model.config.max_position_embeddings
        return TorchRuntime(model, min(n_ctx or limit, limit), threads, tokenizer)

    # llamacpp (LlamaCppRuntime caps n_ctx at the GGUF's context)
    if gguf_path is not None:
        if not Path(gguf_path).is_file():
            raise UserError(f"GGUF file not found: {gguf_path}")
        return LlamaCppRuntime(gguf_path, n_ctx, threads, seed, tokenizer=tokenizer)
    if quant not in QUANTS:
        raise UserError(f"unknown quant '{quant}'; choose one of {', '.join(QUANTS)}")
    if ckpt is not None:
        cfg = ModelConfig.from_file(Path(ckpt) / "config.json")
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(ckpt)
    problems = llamacpp_problems(cfg)
    if problems:
        raise UserError("llama.cpp cannot run this config: " + "; ".join(problems))
    if cache_dir is not None and ckpt is None and model is None:
        path = Path(cache_dir) / gguf_cache_name(cfg, quant, seed)
        if not path.is_file():
            export_gguf(cfg, path, quant=quant, seed=seed)
        return LlamaCppRuntime(path, n_ctx, threads, seed)
    tmp = tempfile.mkdtemp(prefix="pocketlm-gguf-")
    try:
        path = export_gguf(model if model is not None else (ckpt or cfg), Path(tmp) / "model.gguf",
                           quant=quant, seed=seed)
        return LlamaCppRuntime(path, n_ctx, threads, seed, tokenizer=tokenizer, cleanup=tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
