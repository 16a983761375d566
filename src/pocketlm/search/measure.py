"""Timing a shape on the real engine with random weights (`EngineMeasurer`), and which config the
engine times for a shape it cannot run natively (`engine_config`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from pocketlm.model.config import ModelConfig
from pocketlm.runtime.engine import gguf_cache_name, load_runtime
from pocketlm.runtime.timing import measure
from pocketlm.runtime.gguf import export_gguf, llamacpp_problems
from pocketlm.search.settings import SearchSettings


def engine_config(cfg: ModelConfig, backend: str) -> tuple[ModelConfig | None, str]:
    """(config the engine times, problem): llama.cpp has no ReLU/GELU-gated llama MLP, so those run with
    its SiLU-gated MLP on the same shape (same matmuls, same bytes); anything else it can't run -> None."""
    if backend != "llamacpp":
        return cfg, ""
    problems = llamacpp_problems(cfg)
    if not problems:
        return cfg, ""
    sub = cfg.replace(activation="silu")
    if not llamacpp_problems(sub):
        return sub, ""
    return None, "; ".join(llamacpp_problems(sub))


class EngineMeasurer:
    """Times a config on the real engine with random weights (pocketlm.runtime.engine).

    llama.cpp: exports a random GGUF straight in the quantized layout into OUT/.gguf/ and keeps it
    while the shape may still be a finalist (`prune`), so the finals don't export again."""

    def __init__(self, settings: SearchSettings):
        self.s = settings
        self.dir = settings.out / ".gguf"

    def gguf_path(self, cfg: ModelConfig) -> Path:
        return self.dir / gguf_cache_name(cfg, self.s.quant, self.s.seed)

    def __call__(self, cfg: ModelConfig, repeats: int, warmup: int) -> dict:
        s = self.s
        n_ctx = s.prompt_len + s.decode_len + 16
        t0 = time.perf_counter()
        if s.backend == "llamacpp":
            path = self.gguf_path(cfg)
            if not path.exists():
                export_gguf(cfg, path, quant=s.quant, seed=s.seed)
            spec: Any = str(path)
        else:
            spec = cfg
        export_s = time.perf_counter() - t0
        rt = load_runtime(spec, backend=s.backend, quant=s.quant, threads=s.threads, n_ctx=n_ctx,
                          dtype=s.dtype, seed=s.seed)
        try:
            if warmup:  # a short warm-up touches every weight page and builds both graph sizes; a full
                # workload as warm-up would cost a third of the search's time for nothing
                rt.prefill(list(range(min(32, s.prompt_len))))
                rt.decode(min(4, s.decode_len))
            m = measure(rt, s.prompt_len, s.decode_len, repeats=repeats, warmup=0, seed=s.seed)
        finally:
            rt.close()
        m = dict(m)
        m["export_s"] = round(export_s, 3)
        return m

    def prune(self, keep: Iterable[ModelConfig]) -> None:
        """Delete exported GGUFs except those of the configs in `keep`."""
        if not self.dir.exists():
            return
        names = {self.gguf_path(cfg).name for cfg in keep}
        for f in self.dir.glob("*.gguf"):
            if f.name not in names:
                f.unlink(missing_ok=True)

    def cleanup(self) -> None:
        if self.dir.exists():
            for f in self.dir.iterdir():
                f.unlink(missing_ok=True)
            self.dir.rmdir()
