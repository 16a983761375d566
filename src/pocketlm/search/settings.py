"""What a search is asked to do (`SearchSettings`) and how it scores a measurement (objectives)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig
from pocketlm.runtime.gguf import QUANTS
from pocketlm.runtime.hardware import default_threads
from pocketlm.model.costs import cost_precision
from pocketlm.search.space import Constraints

# objective -> (metric, label, unit, lower is better)
OBJECTIVES = {
    "e2e": ("e2e_s", "end-to-end latency", "s", True),
    "decode": ("decode_tok_s", "decode speed", "tok/s", False),
    "prefill": ("prefill_tok_s", "prefill speed", "tok/s", False),
    "ttft": ("ttft_s", "time to first token", "s", True),
}
METRICS = ("ttft_s", "prefill_tok_s", "decode_tok_s", "e2e_s", "peak_rss_mb")
BACKENDS = ("llamacpp", "torch")
SUBSTITUTE = "silu substitute"
BASELINE_WINDOW = 0.10  # presets within ±10% of the budget are the baselines

# measure_fn(measured_cfg, repeats, warmup) -> {"ttft_s", "prefill_tok_s", "decode_tok_s", "e2e_s", ...}
MeasureFn = Callable[[ModelConfig, int, int], dict]


def objective_cost(metrics: dict, objective: str) -> float:
    """The objective as a cost (lower is better): seconds, or seconds per token for speeds."""
    metric, _, _, lower = OBJECTIVES[objective]
    v = float(metrics[metric])
    return v if lower else 1.0 / v


def speedup(base: dict, new: dict, objective: str) -> float:
    """How many times better `new` is than `base` on `objective` (>1: new is faster)."""
    return objective_cost(base, objective) / objective_cost(new, objective)


@dataclass
class SearchSettings:
    budget: int
    out: Path
    budget_kind: str = "total"
    tolerance: float = 0.05
    vocab_size: int = 49152
    max_weight_mb: float | None = None
    max_kv_mb: float | None = None
    kv_context: int = 2048
    space: str | None = None
    prompt_len: int = 256
    decode_len: int = 128
    objective: str = "e2e"
    backend: str = "llamacpp"
    quant: str = "q4_0"
    dtype: str = "float32"  # torch backend
    threads: int | None = None
    max_measure: int = 40  # candidate shapes screened (presets and final re-measurements not counted)
    time_budget: float = 480.0  # seconds for the whole search (soft: the finals always run)
    repeats: int = 2  # timed runs per screening measurement (after one warm-up)
    finalists: int = 3
    final_rounds: int = 3
    initial: int = 6  # diverse candidates timed before the first latency-model fit
    batch: int = 4  # candidates timed per model-guided round (the last one exploratory)
    seed: int = 0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.objective not in OBJECTIVES:
            raise UserError(f"unknown objective '{self.objective}'; choose one of {', '.join(OBJECTIVES)}")
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend '{self.backend}'; choose one of {', '.join(BACKENDS)}")
        for name in ("prompt_len", "decode_len", "max_measure", "repeats", "finalists", "final_rounds",
                     "initial", "batch"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.time_budget <= 0:
            raise UserError(f"--time-budget must be positive seconds, got {self.time_budget}")
        if self.threads is not None and self.threads <= 0:
            raise UserError(f"--threads must be positive, got {self.threads}")
        if self.backend == "llamacpp" and self.quant not in QUANTS:
            raise UserError(f"unknown quant '{self.quant}'; choose one of {', '.join(QUANTS)}")

    @property
    def precision(self) -> str:
        """The weight precision the engine runs (latency model key, --max-weight-mb unit)."""
        return cost_precision(self.quant if self.backend == "llamacpp" else self.dtype)

    @property
    def resolved_threads(self) -> int:
        return self.threads or default_threads()

    def engine(self) -> str:
        what = self.quant if self.backend == "llamacpp" else self.dtype
        return f"{self.backend}:{what}:t{self.resolved_threads}"

    def engine_label(self) -> str:
        name = "llama.cpp" if self.backend == "llamacpp" else "torch"
        what = self.quant.upper() if self.backend == "llamacpp" else self.dtype
        return f"{name} {what}, {self.resolved_threads} thread{'s' if self.resolved_threads > 1 else ''}"

    def constraints(self) -> Constraints:
        return Constraints(budget=self.budget, budget_kind=self.budget_kind, tolerance=self.tolerance,
                           vocab_size=self.vocab_size, precision=self.precision,
                           max_weight_mb=self.max_weight_mb, max_kv_mb=self.max_kv_mb, kv_context=self.kv_context)
