"""Runtimes: run any model on our torch model or on llama.cpp, time it, generate text.

`load_runtime(spec, backend)` takes a checkpoint dir, a .gguf file, a preset, a config file or a
ModelConfig. Both backends share one loop (prefill → sample → decode) built on two primitives,
`_eval_prompt` and `_eval_token`, so their timings and sampling are directly comparable.
`measure()` is the timing protocol the benchmarks and the search use: random prompt ids, warm-up,
repeats, medians and spread of time-to-first-token, prefill tok/s and decode tok/s from position T.

`pocketlm generate MODEL --prompt TEXT | --prompt-ids 1,2,3 [--backend torch|llamacpp]` ends every
generation with prompt tok/s, generation tok/s and peak memory (like mlx-lm).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from pocketlm.model.config import ModelConfig
from pocketlm.errors import UserError

BACKENDS = ("torch", "llamacpp")


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

    def summary(self) -> str:
        return (f"prompt: {self.prompt_tokens} tokens, {self.prompt_tok_s:.1f} tok/s | "
                f"generation: {len(self.tokens)} tokens, {self.gen_tok_s:.1f} tok/s | "
                f"peak memory: {self.peak_mem_mb:.1f} MB")


# ---------------------------------------------------------------------------------------------
# memory

def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (since start or the last reset_peak_rss())."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def reset_peak_rss() -> bool:
    """Reset the peak-RSS watermark (Linux: writing 5 to clear_refs), so one process can report the
    peak of each model it benchmarks. Returns False where unsupported (peak then spans the process)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


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

    # -- backend primitives ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def _eval_prompt(self, ids: list[int]) -> Any:
        """Reset the state, evaluate the prompt, return the last position's logits."""
        raise NotImplementedError

    def _eval_token(self, tok: int) -> Any:
        raise NotImplementedError

    def _logits_tensor(self, logits: Any):
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
        if self.tokenizer is None:
            raise UserError("this model has no tokenizer; pass token ids with --prompt-ids 1,2,3")
        if chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise UserError("this model's tokenizer has no chat template; drop --chat")
            messages = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": text}]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(text))

    def decode_text(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            raise UserError("this model has no tokenizer to turn ids into text")
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

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
        t0 = time.perf_counter()
        self._logits = self._eval_prompt(ids)
        dt = time.perf_counter() - t0
        self.pos = len(ids)
        return dt

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

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, stop_ids: Iterable[int] = (), seed: int = 0,
                 on_token: Callable[[int], None] | None = None) -> GenerationResult:
        """Sample up to max_new_tokens (the stop token, if hit, is not included)."""
        import torch

        from pocketlm.runtime.sampling import check_sampling, sample_next

        check_sampling(temperature, top_k, top_p)
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        ids = self._check(prompt_ids, max_new_tokens - 1)
        stops = set(int(s) for s in stop_ids)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        tokens: list[int] = []
        stopped = False
        t0 = time.perf_counter()
        logits = self._eval_prompt(ids)
        self.pos = len(ids)
        ttft = time.perf_counter() - t0
        t_first = None
        for i in range(max_new_tokens):
            tok = (self._argmax(logits) if temperature == 0 else
                   sample_next(self._logits_tensor(logits), temperature, top_k, top_p, gen))
            if t_first is None:
                t_first = time.perf_counter()
                ttft = t_first - t0
            if tok in stops:
                stopped = True
                break
            tokens.append(tok)
            if on_token is not None:
                on_token(tok)
            if i + 1 < max_new_tokens:
                logits = self._eval_token(tok)
                self.pos += 1
        t_end = time.perf_counter()
        self._logits = logits
        n_decoded = max(len(tokens) - 1, 0) + (1 if stopped and tokens else 0)
        gen_s = t_end - (t_first or t_end)
        text = self.decode_text(tokens) if self.has_tokenizer else None
        return GenerationResult(
            tokens=tokens, text=text, prompt_tokens=len(ids), prompt_tok_s=len(ids) / ttft,
            gen_tok_s=n_decoded / gen_s if gen_s > 0 and n_decoded else 0.0, ttft_s=ttft,
            peak_mem_mb=peak_rss_mb(), stopped=stopped)


class TorchRuntime(Runtime):
    backend = "torch"

    def __init__(self, model, n_ctx: int, threads: int, tokenizer: Any = None):
        import torch

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
        import torch

        from pocketlm.model.decoder import KVCache

        if self._cache is None:
            self._cache = KVCache(self.config, 1, self.n_ctx, self.dtype)
        self._cache.pos = 0
        with torch.inference_mode():
            return self.model(torch.tensor([ids]), cache=self._cache, last_only=True)[0, -1]

    def _eval_token(self, tok):
        import torch

        with torch.inference_mode():
            return self.model(torch.tensor([[tok]]), cache=self._cache, last_only=True)[0, -1]

    def close(self) -> None:
        self._cache = None


class LlamaCppRuntime(Runtime):
    backend = "llamacpp"

    def __init__(self, path: str | os.PathLike, n_ctx: int, threads: int, seed: int = 0,
                 tokenizer: Any = None, cleanup: str | None = None):
        from pocketlm.runtime.gguf import read_gguf

        info = read_gguf(path)  # validates: a damaged file is a UserError, not a segfault
        cfg = info["config"]
        if cfg is not None:
            n_ctx = min(n_ctx, cfg.max_position_embeddings)
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
        import torch

        return torch.from_numpy(np.array(logits, dtype=np.float32))

    # tokenizer: the checkpoint's HF tokenizer when we exported it, else the GGUF's own vocabulary
    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer is not None or self._gguf_vocab

    def encode(self, text: str, chat: bool = False, system: str | None = None) -> list[int]:
        if self.tokenizer is not None or not self._gguf_vocab:
            if self.tokenizer is None:
                raise UserError("this model has a placeholder vocabulary (random weights, no tokenizer); "
                                "pass token ids with --prompt-ids 1,2,3")
            return super().encode(text, chat, system)
        if chat:
            template = self.info.get("chat_template")
            if not template:
                raise UserError("this GGUF has no chat template; drop --chat")
            import jinja2

            messages = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": text}]
            text = jinja2.Environment().from_string(template).render(
                messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=not chat, special=True))

    def decode_text(self, ids: Sequence[int]) -> str:
        if self.tokenizer is not None:
            return super().decode_text(ids)
        if not self._gguf_vocab:
            raise UserError("this model has a placeholder vocabulary; no text to show")
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

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
# llama.cpp loading

def open_llama(path: str | os.PathLike, n_ctx: int = 2048, threads: int | None = None, seed: int = 0,
               n_batch: int = 512):
    """A llama_cpp.Llama with pocketlm's settings (quiet, threads for both prefill and decode).

    Also the way to get a "raw llama-cpp-python" handle for comparisons: it only adds the
    extra-buffer-type workaround below, which raw Llama(...) would need on the same machine.
    """
    try:
        import llama_cpp
    except ImportError:
        raise UserError("the llamacpp backend needs llama-cpp-python: pip install 'pocketlm[runtime]'") from None
    threads = threads or os.cpu_count() or 1
    kwargs = dict(n_ctx=n_ctx, n_batch=min(n_batch, n_ctx), n_ubatch=min(n_batch, n_ctx), n_threads=threads,
                  n_threads_batch=threads, seed=seed, verbose=False)
    with _extra_bufts(_extra_bufts_ok()):
        try:
            return llama_cpp.Llama(str(path), **kwargs)
        except ValueError as e:
            raise UserError(f"llama.cpp could not load {path}: {e}") from None


@contextlib.contextmanager
def _extra_bufts(enabled: bool):
    """llama-cpp-python does not expose llama_model_params.use_extra_bufts (weight repacking into
    AMX / interleaved CPU layouts), so patch the defaults it starts from while a model loads."""
    import llama_cpp.llama as llama_mod

    if enabled:
        yield
        return
    module = llama_mod.llama_cpp
    original = module.llama_model_default_params

    def defaults():
        params = original()
        params.use_extra_bufts = False
        return params

    module.llama_model_default_params = defaults
    try:
        yield
    finally:
        module.llama_model_default_params = original


def _cache_home() -> Path:
    return Path(os.environ.get("POCKETLM_CACHE", Path.home() / ".cache" / "pocketlm"))


_PROBE_RESULT: bool | None = None

_PROBE = r"""
import sys, tempfile, os
import llama_cpp
from pocketlm.model.config import ModelConfig
from pocketlm.runtime.gguf import export_gguf
d = tempfile.mkdtemp()
p = export_gguf(ModelConfig(vocab_size=512, hidden_size=128, num_layers=1, num_heads=4,
                            intermediate_size=256), os.path.join(d, "probe.gguf"), quant="q4_0")
llm = llama_cpp.Llama(p, n_ctx=64, n_threads=1, verbose=False)
llm.eval(list(range(40)))
print("ok")
"""


def _extra_bufts_ok() -> bool:
    """Whether llama.cpp's extra buffer types (weight repacking) work here.

    llama.cpp's AMX backend segfaults on the first quantized matmul on some machines
    (ggml-org/llama.cpp#20824). A build without AMX needs no check; otherwise probe once per
    machine and build in a subprocess (cached). POCKETLM_LLAMA_EXTRA_BUFTS=0/1 overrides.
    """
    global _PROBE_RESULT
    env = os.environ.get("POCKETLM_LLAMA_EXTRA_BUFTS")
    if env in ("0", "1"):
        return env == "1"
    if _PROBE_RESULT is not None:
        return _PROBE_RESULT
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if " amx" not in flags:
        _PROBE_RESULT = True
        return True
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode(errors="replace")
    if "AMX" not in system_info:  # built without the AMX backend (pocketlm's Makefile does that)
        _PROBE_RESULT = True
        return True
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines()
                  if line.startswith("model name")), "cpu")
    key = hashlib.sha1(f"{model}|{llama_cpp.__version__}|{system_info}|{sys.executable}".encode()).hexdigest()[:12]
    cache = _cache_home() / f"llamacpp-extra-bufts-{key}.json"
    if cache.is_file():
        with contextlib.suppress(Exception):
            _PROBE_RESULT = bool(json.loads(cache.read_text())["ok"])
            return _PROBE_RESULT
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
        ok = r.returncode == 0 and "ok" in r.stdout
    except subprocess.TimeoutExpired:
        ok = False
    _PROBE_RESULT = ok
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"ok": ok, "cpu": model, "llama_cpp": llama_cpp.__version__}))
    return ok


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
    from pocketlm.model.checkpoint import is_checkpoint_dir

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
                 n_ctx: int = 2048, dtype: str = "float32", seed: int = 0,
                 cache_dir: str | os.PathLike | None = None) -> Runtime:
    """A runtime for a checkpoint dir, .gguf file, preset name, config file, ModelConfig or PocketLM.

    torch: our model in `dtype` (random weights from `seed` for a preset/config). llamacpp: a GGUF
    file as is, or an export in `quant` (to `cache_dir` for configs, reused across calls; else a
    temp dir removed on close()). Threads default to all cores; n_ctx is capped at the model's max.
    """
    from pocketlm.runtime.gguf import QUANTS, export_gguf, llamacpp_problems

    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    threads = int(threads or os.cpu_count() or 1)
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    if n_ctx < 1:
        raise UserError(f"n_ctx must be >= 1, got {n_ctx}")
    model = cfg = ckpt = gguf_path = None
    if isinstance(spec, ModelConfig):
        cfg = spec
    elif type(spec).__name__ == "PocketLM":
        model, cfg = spec, spec.config
    else:
        s = str(spec)
        if _is_gguf(s):
            gguf_path = s
        elif _has_weights(s):
            ckpt = s
        else:
            from pocketlm.model.presets import resolve_config

            cfg = resolve_config(s)

    if backend == "torch":
        from pocketlm.model.checkpoint import load_checkpoint, load_tokenizer, parse_dtype
        from pocketlm.model.decoder import PocketLM

        if gguf_path is not None:
            raise UserError(f"the torch backend can't run a GGUF file ({gguf_path}); use --backend llamacpp "
                            "or pass the checkpoint directory")
        tdtype = parse_dtype(dtype)
        tokenizer = None
        if ckpt is not None:
            model = load_checkpoint(ckpt, dtype=tdtype)
            tokenizer = load_tokenizer(ckpt)
        elif model is None:
            model = PocketLM.from_config(cfg, seed=seed, dtype=tdtype)
        else:
            model = model.to(tdtype)
        return TorchRuntime(model, min(n_ctx, model.config.max_position_embeddings), threads, tokenizer)

    # llamacpp
    if gguf_path is not None:
        return LlamaCppRuntime(gguf_path, n_ctx, threads, seed)
    if quant not in QUANTS:
        raise UserError(f"unknown quant '{quant}'; choose one of {', '.join(QUANTS)}")
    tokenizer = None
    if ckpt is not None:
        from pocketlm.model.checkpoint import load_tokenizer

        cfg = ModelConfig.from_file(Path(ckpt) / "config.json")
        tokenizer = load_tokenizer(ckpt)
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


# ---------------------------------------------------------------------------------------------
# timing protocol

def _spread(values: list[float]) -> float:
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else 0.0


def measure(rt: Runtime, prompt_len: int, decode_len: int, repeats: int = 3, warmup: int = 1,
            seed: int = 0) -> dict:
    """Median TTFT, prefill tok/s and decode tok/s (decode from position prompt_len) over `repeats`
    runs after `warmup` runs, with random prompt ids; *_spread = (max - min) / median."""
    if prompt_len < 1 or decode_len < 0 or repeats < 1 or warmup < 0:
        raise UserError("measure needs prompt_len >= 1, decode_len >= 0, repeats >= 1, warmup >= 0")
    rt._check_room(prompt_len + decode_len, f"prompt {prompt_len} + decode {decode_len}")
    rng = np.random.default_rng(seed)
    reset_peak_rss()
    ttft, prefill, decode = [], [], []
    for i in range(warmup + repeats):
        ids = rng.integers(0, rt.vocab_size, size=prompt_len).tolist()
        t = rt.prefill(ids)
        steps = rt.decode(decode_len) if decode_len else []
        if i < warmup:
            continue
        ttft.append(t)
        prefill.append(prompt_len / t)
        if steps:
            decode.append(len(steps) / sum(steps))
    ttft_s = statistics.median(ttft)
    decode_tok_s = statistics.median(decode) if decode else 0.0
    return {
        "backend": rt.backend, "quant": rt.quant, "threads": rt.threads,
        "prompt_len": prompt_len, "decode_len": decode_len, "repeats": repeats,
        "ttft_s": ttft_s, "prefill_tok_s": statistics.median(prefill), "decode_tok_s": decode_tok_s,
        "e2e_s": ttft_s + (decode_len / decode_tok_s if decode_tok_s else 0.0),
        "peak_rss_mb": peak_rss_mb(),
        "ttft_spread": _spread(ttft), "prefill_spread": _spread(prefill),
        "decode_spread": _spread(decode) if decode else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# CLI

def register(subparsers) -> None:
    from pocketlm.runtime.gguf import QUANTS

    p = subparsers.add_parser(
        "generate", help="generate text with the torch or llama.cpp backend",
        description="Generate from a checkpoint directory, a GGUF file, a preset or a config (random "
                    "weights). Ends with prompt tok/s, generation tok/s and peak memory.")
    p.add_argument("model", metavar="MODEL", help="checkpoint dir, .gguf file, preset name or config file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (needs a tokenizer)")
    src.add_argument("--prompt-ids", help="comma-separated prompt token ids, e.g. 1,2,3")
    p.add_argument("--backend", default="llamacpp", choices=BACKENDS, help="default llamacpp")
    p.add_argument("--quant", default="q4_0", choices=QUANTS,
                   help="GGUF weight type when exporting for llamacpp (default q4_0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="torch backend dtype")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--greedy", action="store_true", help="greedy decoding (temperature 0)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and random-weight seed)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--system", default=None, help="system message with --chat")
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    p.add_argument("--n-ctx", type=int, default=2048, help="context to allocate (capped at the model's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cli_generate)


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.replace(" ", ",").split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise UserError("--prompt-ids is empty")
    return ids


def _cli_generate(args) -> int:
    temperature = 0.0 if args.greedy else args.temperature
    prompt_ids = _parse_ids(args.prompt_ids) if args.prompt_ids is not None else None
    rt = load_runtime(args.model, backend=args.backend, quant=args.quant, threads=args.threads,
                      n_ctx=args.n_ctx, dtype=args.dtype, seed=args.seed)
    try:
        if prompt_ids is None:
            if not rt.has_tokenizer:
                raise UserError("this model has no tokenizer, so --prompt TEXT can't be encoded; "
                                "pass token ids with --prompt-ids 1,2,3")
            prompt_ids = rt.encode(args.prompt, chat=args.chat, system=args.system)
        elif args.chat:
            raise UserError("--chat needs --prompt TEXT")
        stops = rt.special_ids("<|im_end|>") if args.chat else rt.special_ids()
        show_text = rt.has_tokenizer and not args.json
        printed = ""
        tokens: list[int] = []

        def on_token(tok: int) -> None:  # stream text as it is generated
            nonlocal printed
            tokens.append(tok)
            text = rt.decode_text(tokens)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
                return
            print(text[len(printed):], end="", flush=True)
            printed = text

        result = rt.generate(prompt_ids, max_new_tokens=args.max_new_tokens, temperature=temperature,
                             top_k=args.top_k, top_p=args.top_p, stop_ids=stops, seed=args.seed,
                             on_token=on_token if show_text else None)
        if args.json:
            from pocketlm.utils import print_json

            out = {k: v for k, v in result.__dict__.items()}
            out.update(backend=rt.backend, quant=rt.quant, threads=rt.threads,
                       text=result.text if rt.has_tokenizer else None)
            print_json(out)
            return 0
        if show_text:
            rest = result.text or ""
            print(rest[len(printed):] if rest.startswith(printed) else "")
        else:
            print(" ".join(map(str, result.tokens)))
        print("=" * 10)
        print(result.summary())
    finally:
        rt.close()
    return 0
