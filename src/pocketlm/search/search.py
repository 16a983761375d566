"""`pocketlm search`: the fastest architecture for a parameter budget on this machine's engine.

PhoneLM's idea, measured rather than guessed: enumerate every shape of the search space within the
budget (thousands), then

1. time the published presets within ±10% of the budget (what a user would otherwise pick) and a
   small diverse sample of candidates on the real engine with random weights (llama.cpp Q4_0 by
   default), each workload = a `--prompt-len` prompt then `--decode-len` decoded tokens;
2. fit the latency model (pocketlm.search.latency) to everything measured so far, predict every candidate,
   time the best-predicted ones (plus one exploratory pick), refit; repeat until no unmeasured
   candidate is predicted to beat the current top (within the model's observed error), the top stays
   the same for two rounds, or `--max-measure` / `--time-budget` run out;
3. re-time the finalists and the fastest presets side by side, alternating, and rank them on those
   medians: the final ranking uses measured numbers only.

Every measurement is appended (fsync'd) to OUT/results.jsonl as soon as it is taken; a rerun of the
same command reuses them, so an interrupted search resumes where it stopped. The winner's config.json
(Hugging Face format) is ready for `pocketlm init` / `pocketlm pretrain`.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pocketlm.model import costs
from pocketlm.model.config import ModelConfig
from pocketlm.errors import UserError
from pocketlm.search.space import (BUDGET_KINDS, Candidate, Constraints, SearchSpace, enumerate_space,
                                   features, format_count, parse_budget)

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


# ---------------------------------------------------------------------------------------------- settings
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
        if self.backend == "llamacpp":
            from pocketlm.runtime.gguf import QUANTS

            if self.quant not in QUANTS:
                raise UserError(f"unknown quant '{self.quant}'; choose one of {', '.join(QUANTS)}")

    @property
    def precision(self) -> str:
        """The weight precision the engine runs (latency model key, --max-weight-mb unit)."""
        from pocketlm.search.latency import cost_precision

        return cost_precision(self.quant if self.backend == "llamacpp" else self.dtype)

    @property
    def resolved_threads(self) -> int:
        from pocketlm.runtime.hardware import default_threads

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


# ---------------------------------------------------------------------------------------------- cache
class ResultStore:
    """OUT/results.jsonl: one JSON object per measurement, appended and fsync'd as it is taken."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill: that measurement is simply taken again
                if isinstance(rec, dict) and "key" in rec:
                    self.records[rec["key"]] = rec
        self.loaded = set(self.records)  # keys measured by earlier runs

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def append(self, rec: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            if f.tell() > 0:  # a previous kill may have left a partial line: start on a fresh one
                with open(self.path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write("\n")
            f.write(json.dumps(rec, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[rec["key"]] = rec


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


# ---------------------------------------------------------------------------------------------- units
@dataclass
class Unit:
    """One thing to time: a candidate shape (with its same-timing twins) or a preset baseline."""

    name: str
    cfg: ModelConfig  # the config the user gets (e.g. relu)
    measured_cfg: ModelConfig  # what the engine runs (e.g. the silu twin on llama.cpp)
    role: str  # candidate | baseline
    variant: str = ""  # baselines: "published" | "search vocab"
    twins: list[str] = field(default_factory=list)  # other candidate names that time identically
    params: dict = field(default_factory=dict)
    screen: dict | None = None  # the screening record
    finals: list[dict] = field(default_factory=list)
    predicted: dict | None = None  # latency-model prediction made before it was measured

    @property
    def measured_as(self) -> str:
        return "native" if self.measured_cfg.activation == self.cfg.activation else SUBSTITUTE

    def final_metrics(self) -> dict | None:
        ok = [r for r in self.finals if not r.get("error")]
        if not ok:
            return None
        out = {m: statistics.median(r[m] for r in ok) for m in METRICS if all(m in r for r in ok)}
        out["rounds"] = len(ok)
        return out

    def best_metrics(self) -> dict | None:
        """Final (alternating) medians when available, else the screening measurement."""
        fm = self.final_metrics()
        if fm:
            return fm
        return self.screen if self.screen and not self.screen.get("error") else None


def engine_config(cfg: ModelConfig, backend: str) -> tuple[ModelConfig | None, str]:
    """(config the engine times, problem): llama.cpp has no ReLU/GELU-gated llama MLP, so those run with
    its SiLU-gated MLP on the same shape (same matmuls, same bytes); anything else it can't run -> None."""
    if backend != "llamacpp":
        return cfg, ""
    from pocketlm.runtime.gguf import llamacpp_problems

    problems = llamacpp_problems(cfg)
    if not problems:
        return cfg, ""
    sub = cfg.replace(activation="silu")
    if not llamacpp_problems(sub):
        return sub, ""
    return None, "; ".join(llamacpp_problems(sub))


def candidate_units(cands: list[Candidate], backend: str) -> tuple[list[Unit], dict[str, int]]:
    """One unit per engine shape; a shape's native-activation candidate represents its twins."""
    by_shape: dict[str, list[tuple[Candidate, ModelConfig]]] = {}
    skipped: dict[str, int] = {}
    for c in cands:
        mcfg, problem = engine_config(c.cfg, backend)
        if mcfg is None:
            skipped[problem] = skipped.get(problem, 0) + 1
            continue
        by_shape.setdefault(mcfg.shape_key(), []).append((c, mcfg))
    units = []
    for group in by_shape.values():
        group.sort(key=lambda cm: cm[0].cfg.activation != cm[1].activation)  # native first
        c, mcfg = group[0]
        units.append(Unit(c.cfg.name, c.cfg, mcfg, "candidate", twins=[g[0].cfg.name for g in group[1:]],
                          params=c.params))
    return units, skipped


def baseline_units(settings: SearchSettings) -> list[Unit]:
    """Published presets within ±10% of the budget (same kind), as published and with the search's vocab."""
    from pocketlm.model.presets import published_presets

    cons = settings.constraints()
    units = []
    for p in published_presets():
        if not cons.within_budget(costs.param_groups(p), BASELINE_WINDOW):
            continue
        variants = [(p.name, p, "published")]
        if p.vocab_size != settings.vocab_size:
            v = p.replace(vocab_size=settings.vocab_size)
            variants.append((f"{p.name}@v{settings.vocab_size}", v, "search vocab"))
        for name, cfg, variant in variants:
            mcfg, problem = engine_config(cfg, settings.backend)
            if mcfg is None:
                continue
            units.append(Unit(name, cfg, mcfg, "baseline", variant=variant, params=costs.param_groups(cfg)))
    return units


# ---------------------------------------------------------------------------------------------- engine
class EngineMeasurer:
    """Times a config on the real engine with random weights (pocketlm.runtime.engine).

    llama.cpp: exports a random GGUF straight in the quantized layout into OUT/.gguf/ and keeps it
    while the shape may still be a finalist (`prune`), so the finals don't export again."""

    def __init__(self, settings: SearchSettings):
        self.s = settings
        self.dir = settings.out / ".gguf"

    def gguf_path(self, cfg: ModelConfig) -> Path:
        return self.dir / f"{cfg.shape_key()}-{self.s.quant}.gguf"

    def __call__(self, cfg: ModelConfig, repeats: int, warmup: int) -> dict:
        from pocketlm.runtime.engine import load_runtime, measure

        s = self.s
        n_ctx = s.prompt_len + s.decode_len + 16
        t0 = time.perf_counter()
        if s.backend == "llamacpp":
            path = self.gguf_path(cfg)
            if not path.exists():
                from pocketlm.runtime.gguf import export_gguf

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

    def prune(self, keep: set[str]) -> None:
        """Delete exported GGUFs except those of the shapes in `keep` (shape keys)."""
        if not self.dir.exists():
            return
        for f in self.dir.glob("*.gguf"):
            if not any(f.name == f"{k}-{self.s.quant}.gguf" for k in keep):
                f.unlink(missing_ok=True)

    def cleanup(self) -> None:
        if self.dir.exists():
            for f in self.dir.iterdir():
                f.unlink(missing_ok=True)
            self.dir.rmdir()


# ---------------------------------------------------------------------------------------------- the search
class Search:
    def __init__(self, settings: SearchSettings, measure_fn: MeasureFn | None = None,
                 log: Callable[[str], None] | None = None, progress: bool = True):
        self.s = settings
        self.engine = None if measure_fn is not None else EngineMeasurer(settings)
        self.measure_fn = measure_fn or self.engine
        self.progress = progress
        self._log = log or print
        self.rng = random.Random(settings.seed)
        self.bar = None
        self.t0 = time.monotonic()
        self.cached_s = 0.0  # wall time of measurements reused from the cache (counts toward the budget)
        self.new_measurements = 0
        self.reused = 0
        self.stop_reason = ""
        self.guided_rounds = 0
        self.model_errors: list[float] = []  # |predicted - measured| / measured, before measuring
        self.latency_fit: dict = {}

    # -------------------------------------------------------------- helpers
    def log(self, msg: str) -> None:
        if self.bar is not None:
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stdout):  # clear the bar, print, redraw it
                self._log(msg)
        else:
            self._log(msg)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0 + self.cached_s

    def key(self, unit: Unit, phase: str) -> str:
        s = self.s
        return f"{phase}|{s.engine()}|p{s.prompt_len}+d{s.decode_len}|{unit.measured_cfg.shape_key()}"

    def cost(self, unit: Unit) -> float:
        m = unit.best_metrics()
        return objective_cost(m, self.s.objective) if m else math.inf

    def screen_cost(self, unit: Unit) -> float:
        return objective_cost(unit.screen, self.s.objective) if unit.screen and not unit.screen.get("error") \
            else math.inf

    def _record(self, unit: Unit, key: str, phase: str, round_: int | None, repeats: int, warmup: int) -> dict:
        s = self.s
        cached = self.store.get(key)
        if cached is not None and cached.get("error") and key in self.store.loaded:
            cached = None  # a failure from an earlier run is retried, not reused
        if cached is not None:
            if key in self.store.loaded:  # measured by an earlier run (in-run repeats cost nothing)
                self.reused += 1
                self.cached_s += float(cached.get("wall_s", 0.0))
            if self.bar is not None:
                self.bar.update(1)
            return cached
        t0 = time.perf_counter()
        rec: dict[str, Any] = {
            "key": key, "phase": phase, "round": round_, "role": unit.role, "name": unit.name,
            "variant": unit.variant or None, "config": unit.cfg.to_dict(),
            "measured_config": unit.measured_cfg.to_dict() if unit.measured_as != "native" else None,
            "measured_as": unit.measured_as, "twins": unit.twins, "params": unit.params,
            "params_total": unit.params["total"], "params_non_embedding": unit.params["non_embedding"],
            "weight_mb": round(costs.weight_bytes(unit.cfg, s.precision) / 1e6, 1),
            "kv_mb_at_context": round(costs.kv_bytes_per_token(unit.cfg) * s.kv_context / 1e6, 1),
            "backend": s.backend, "quant": s.quant if s.backend == "llamacpp" else s.dtype,
            "threads": s.resolved_threads, "prompt_len": s.prompt_len, "decode_len": s.decode_len,
            "repeats": repeats, "warmup": warmup, "seed": s.seed, "objective": s.objective,
            "predicted": unit.predicted,
        }
        try:
            m = self.measure_fn(unit.measured_cfg, repeats, warmup)
            missing = [k for k in ("ttft_s", "decode_tok_s") if k not in m]
            if missing:
                raise RuntimeError(f"measurement lacks {missing}")
            m = dict(m)
            m.setdefault("prefill_tok_s", s.prompt_len / m["ttft_s"])
            m.setdefault("e2e_s", m["ttft_s"] + s.decode_len / m["decode_tok_s"])
            rec.update({k: v for k, v in m.items() if k not in ("prompt_len", "decode_len")})
            rec["objective_cost"] = objective_cost(m, s.objective)
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as e:  # noqa: BLE001 - one shape the engine chokes on must not end the search
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        rec["wall_s"] = round(time.perf_counter() - t0, 3)
        rec["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.store.append(rec)
        self.new_measurements += 1
        if self.bar is not None:
            self.bar.update(1)
        return rec

    def screen(self, unit: Unit, why: str = "") -> None:
        rec = self._record(unit, self.key(unit, "screen"), "screen", None, self.s.repeats, 1)
        unit.screen = rec
        if rec.get("error"):
            self.log(f"  ! {unit.name}: {rec['error']}")
            return
        if unit.role == "candidate" and unit.predicted:
            pc = objective_cost(unit.predicted, self.s.objective)
            self.model_errors.append(abs(pc - rec["objective_cost"]) / rec["objective_cost"])
        self.log(f"  {'preset ' if unit.role == 'baseline' else ''}{unit.name:<44} {self.describe(rec)}"
                 f"{'  [' + why + ']' if why else ''}")
        self._postfix()

    def describe(self, m: dict) -> str:
        metric, _, unit, _ = OBJECTIVES[self.s.objective]
        return (f"e2e {m['e2e_s']:.2f} s  ttft {m['ttft_s']:.3f} s  prefill {m['prefill_tok_s']:.0f} tok/s  "
                f"decode {m['decode_tok_s']:.1f} tok/s")

    def _postfix(self) -> None:
        if self.bar is None:
            return
        measured = [u for u in self.units if u.screen and not u.screen.get("error")]
        if measured:
            best = min(measured, key=self.screen_cost)
            metric, _, unit, _ = OBJECTIVES[self.s.objective]
            self.bar.set_postfix_str(f"best {best.screen[metric]:.3g} {unit} ({best.name})")

    # -------------------------------------------------------------- latency model
    def fit_and_predict(self, pending: list[Unit]) -> dict[str, float]:
        """Fit the latency model to all screening measurements; predicted objective cost per pending unit."""
        from pocketlm.search.latency import LatencyModel

        recs = []
        for u in self.units + self.baselines:
            if u.screen and not u.screen.get("error"):
                r = dict(u.screen)
                r["config"] = u.measured_cfg.to_dict()
                r["quant"] = self.s.precision
                recs.append(r)
        model = LatencyModel.fit(recs)
        self.latency_fit = model.fit_info
        preds = {}
        for u in pending:
            p = model.predict(u.measured_cfg, self.s.precision, self.s.prompt_len, self.s.decode_len)
            u.predicted = {k: float(v) for k, v in p.items()}
            preds[u.name] = objective_cost(p, self.s.objective)
        return preds

    def model_error(self) -> float:
        """Typical relative error of predictions made before measuring (0.1 until there are some)."""
        recent = self.model_errors[-8:]
        return statistics.median(recent) if len(recent) >= 3 else 0.10

    # -------------------------------------------------------------- phases
    def diverse_sample(self, pool: list[Unit], k: int, measured: list[Unit]) -> list[Unit]:
        """Farthest-point sampling in shape space (seeded start), away from what is already measured."""
        if not pool:
            return []
        chosen: list[Unit] = []
        ref = [features(u.measured_cfg) for u in measured]
        if not ref:
            first = self.rng.choice(pool)
            chosen.append(first)
            ref.append(features(first.measured_cfg))
        rest = [u for u in pool if u not in chosen]
        while len(chosen) < k and rest:
            def dist(u: Unit) -> float:
                f = features(u.measured_cfg)
                return min(sum((a - b) ** 2 for a, b in zip(f, r)) for r in ref)

            best = max(rest, key=dist)
            chosen.append(best)
            ref.append(features(best.measured_cfg))
            rest.remove(best)
        return chosen

    def finals_reserve(self) -> float:
        walls = [u.screen.get("wall_s", 0.0) for u in self.units + self.baselines if u.screen]
        per = statistics.median(walls) if walls else 5.0
        n = self.s.finalists + min(2, len(self.baselines))
        return n * self.s.final_rounds * per * 0.6  # finals reuse the exported files and warm up once

    def out_of_budget(self) -> str:
        if sum(1 for u in self.units if u.screen) >= self.s.max_measure:
            return f"--max-measure {self.s.max_measure} reached"
        # The time budget is soft: the initial sample and one guided round always run, or a busy
        # machine (slow presets) would leave a "search" of one candidate.
        if self.guided_rounds >= 1 and self.elapsed() + self.finals_reserve() > self.s.time_budget:
            return f"--time-budget {self.s.time_budget:g} s reached"
        return ""

    def top(self, k: int) -> list[Unit]:
        measured = [u for u in self.units if u.screen and not u.screen.get("error")]
        return sorted(measured, key=self.screen_cost)[:k]

    def keep_files(self) -> None:
        """Keep exported GGUFs of the shapes that may still be finalists; delete the rest."""
        if self.engine is None:
            return
        keep = {u.measured_cfg.shape_key() for u in self.top(self.s.finalists + 2)}
        keep |= {u.measured_cfg.shape_key() for u in self.best_baselines(2)}
        self.engine.prune(keep)

    def best_baselines(self, k: int, variant: str = "published") -> list[Unit]:
        measured = [u for u in self.baselines if u.variant == variant and u.screen and not u.screen.get("error")]
        return sorted(measured, key=self.screen_cost)[:k]

    def run(self) -> dict:
        s = self.s
        space = SearchSpace.load(s.space)
        if s.prompt_len + s.decode_len > int(space.base.get("max_position_embeddings", 2048)):
            raise UserError(f"--prompt-len + --decode-len ({s.prompt_len + s.decode_len}) exceeds the candidates' "
                            f"max_position_embeddings ({space.base.get('max_position_embeddings', 2048)}); "
                            "raise it in the space's base section")
        cons = s.constraints()
        enum = enumerate_space(space, cons)
        self.units, skipped = candidate_units(enum.candidates, s.backend)
        if not self.units:
            raise UserError(f"the engine ({s.engine_label()}) can run none of the {len(enum.candidates)} "
                            f"candidates: {'; '.join(skipped)}")
        self.baselines = baseline_units(s)
        self.space, self.enum, self.skipped = space, enum, skipped
        self.store = ResultStore(s.out / "results.jsonl")
        n_subst = sum(1 for u in self.units if u.measured_as != "native")
        self.log(f"pocketlm search: {cons.describe()}, vocab {s.vocab_size:,}, on {s.engine_label()}")
        self.log(f"  workload: {s.prompt_len}-token prompt + {s.decode_len} decoded tokens; objective: "
                 f"{OBJECTIVES[s.objective][1]} ({s.objective})")
        self.log(f"  space ({space.source}): {enum.considered:,} shapes, {len(enum.candidates):,} within the "
                 f"budget and caps -> {len(self.units):,} distinct engine shapes"
                 + (f" ({n_subst} relu/gelu shapes timed with silu, which llama.cpp runs)" if n_subst else ""))
        if self.baselines:
            self.log(f"  baselines: {', '.join(u.name for u in self.baselines)} (published presets within "
                     f"±{BASELINE_WINDOW:.0%} of the budget)")
        else:
            self.log(f"  no published preset within ±{BASELINE_WINDOW:.0%} of the budget: no speedup to report")
        if self.store.records:
            self.log(f"  resuming: {len(self.store.records)} measurements cached in {self.store.path}")

        total = len(self.baselines) + min(s.max_measure, len(self.units)) + \
            (s.finalists + min(2, len(self.baselines))) * s.final_rounds
        if self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="search", unit="run", file=sys.stderr, dynamic_ncols=True, disable=None,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        try:
            self._screening()
            self._finals()
        finally:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            if self.engine is not None:
                self.engine.cleanup()
        return self._finish()

    def _screening(self) -> None:
        s = self.s
        if self.baselines:
            self.log("measuring the presets a user would otherwise pick:")
        for u in self.baselines:
            self.screen(u)
        n_initial = min(s.initial, len(self.units), s.max_measure)
        self.log(f"measuring a diverse sample of {n_initial} candidates:")
        for u in self.diverse_sample(self.units, n_initial, []):
            if self.out_of_budget():
                break
            self.screen(u, "diverse")
        self.keep_files()
        stable_rounds, last_top, rnd = 0, None, 0
        while True:
            reason = self.out_of_budget()
            pending = [u for u in self.units if u.screen is None]
            if not reason and not pending:
                reason = "every candidate shape measured"
            if reason:
                self.stop_reason = reason
                break
            preds = self.fit_and_predict(pending)
            k = min(s.finalists, len(self.top(s.finalists)))
            top = self.top(s.finalists)
            kth = self.screen_cost(top[-1]) if top else math.inf
            err = self.model_error()
            contenders = sorted((u for u in pending if preds[u.name] * (1 - err) < kth),
                                key=lambda u: preds[u.name])
            top_names = tuple(u.name for u in top)
            stable_rounds = stable_rounds + 1 if top_names == last_top else 0
            last_top = top_names
            if rnd >= 1 and k == s.finalists and not contenders:
                self.stop_reason = (f"stable: no unmeasured candidate is predicted to beat the top {k} "
                                    f"(latency model error ≈{err:.0%})")
                break
            if stable_rounds >= 2:
                self.stop_reason = f"stable: top {k} unchanged for {stable_rounds} rounds"
                break
            rnd += 1
            exploit = (contenders or sorted(pending, key=lambda u: preds[u.name]))[:max(1, s.batch - 1)]
            rest = sorted((u for u in pending if u not in exploit), key=lambda u: preds[u.name])
            # one exploratory pick: the shape farthest from everything measured among the better half
            explore = self.diverse_sample(rest[:max(1, len(rest) // 2)], 1,
                                          [u for u in self.units if u.screen] + exploit) if s.batch > 1 else []
            self.log(f"round {rnd}: latency model fitted on "
                     f"{sum(1 for u in self.units + self.baselines if u.screen)} measurements; "
                     f"{len(contenders)} unmeasured shapes predicted within reach of the top {k}")
            for u in exploit + explore:
                if self.out_of_budget():
                    break
                self.screen(u, f"predicted {self._fmt_pred(u)}" + (", exploratory" if u in explore else ""))
            self.guided_rounds += 1
            self.keep_files()

    def _fmt_pred(self, u: Unit) -> str:
        metric, _, unit, _ = OBJECTIVES[self.s.objective]
        return f"{u.predicted[metric]:.3g} {unit}" if u.predicted else "?"

    def _finals(self) -> None:
        s = self.s
        finalists = self.top(s.finalists) + self.best_baselines(2)
        self.finalists = finalists
        if not finalists:
            raise UserError("no candidate could be measured on the engine; see the errors above and in "
                            f"{self.store.path}")
        if self.bar is not None:
            self.bar.total = self.bar.n + len(finalists) * s.final_rounds
            self.bar.refresh()
        self.log(f"finals: {', '.join(u.name for u in finalists)} re-timed side by side, "
                 f"{s.final_rounds} alternating rounds:")
        # Finals are side by side only within one session: key them by the finalist set, so a resumed
        # search whose finalists changed re-times all of them rather than mixing in old numbers.
        import hashlib

        group = hashlib.sha1("|".join(sorted(u.measured_cfg.shape_key() for u in finalists)).encode()).hexdigest()[:8]
        for r in range(s.final_rounds):
            order = finalists[r % len(finalists):] + finalists[:r % len(finalists)]
            if r % 2:
                order = order[::-1]
            for u in order:
                rec = self._record(u, self.key(u, f"final{r}-{group}"), "final", r, 1, 1)
                if not rec.get("error"):
                    u.finals.append(rec)
        for u in finalists:
            m = u.final_metrics()
            if m:
                self.log(f"  {u.name:<52} {self.describe(m)}  (median of {m['rounds']}, spread "
                         f"{self.spread(u):.1%})")

    def spread(self, unit: Unit) -> float:
        """Half the range of the objective over the final rounds, relative to the median."""
        costs_ = [objective_cost(r, self.s.objective) for r in unit.finals if not r.get("error")]
        if len(costs_) < 2:
            return 0.0
        return (max(costs_) - min(costs_)) / 2 / statistics.median(costs_)

    # -------------------------------------------------------------- results
    def _finish(self) -> dict:
        s = self.s
        cands = [u for u in self.finalists if u.role == "candidate" and u.final_metrics()]
        if not cands:
            raise UserError(f"no finalist could be measured; see {self.store.path}")
        winner = min(cands, key=self.cost)
        presets = [u for u in self.finalists if u.role == "baseline" and u.final_metrics()]
        best_preset = min(presets, key=self.cost) if presets else None
        wm = winner.final_metrics()
        summary: dict[str, Any] = {
            "winner": winner.name, "objective": s.objective,
            "objective_metric": OBJECTIVES[s.objective][0],
            "winner_config": winner.cfg.to_dict(), "winner_metrics": _round(wm),
            "winner_spread": round(self.spread(winner), 4),
            "winner_measured_as": winner.measured_as,
            "winner_params_total": winner.params["total"],
            "winner_params_non_embedding": winner.params["non_embedding"],
            "best_preset": best_preset.name if best_preset else None,
            "best_preset_measured_as": best_preset.measured_as if best_preset else None,
            "best_preset_metrics": _round(best_preset.final_metrics()) if best_preset else None,
            "best_preset_spread": round(self.spread(best_preset), 4) if best_preset else None,
            "best_preset_params_total": best_preset.params["total"] if best_preset else None,
            "best_preset_params_non_embedding": best_preset.params["non_embedding"] if best_preset else None,
            "speedup_vs_best_preset": None, "speedups": None,
            "budget": s.budget, "budget_kind": s.budget_kind, "tolerance": s.tolerance,
            "vocab_size": s.vocab_size, "engine": s.engine_label(), "backend": s.backend,
            "quant": s.quant if s.backend == "llamacpp" else s.dtype, "threads": s.resolved_threads,
            "prompt_len": s.prompt_len, "decode_len": s.decode_len, "seed": s.seed,
            "space_shapes": self.enum.considered, "candidates": len(self.enum.candidates),
            "engine_shapes": len(self.units),
            "measured_candidates": sum(1 for u in self.units if u.screen),
            "measured_baselines": sum(1 for u in self.baselines if u.screen),
            "new_measurements": self.new_measurements, "reused_measurements": self.reused,
            "stop_reason": self.stop_reason, "latency_model_error": round(self.model_error(), 4)
            if len(self.model_errors) >= 3 else None,
            "runtime_s": round(time.monotonic() - self.t0, 1), "out": str(s.out),
        }
        if best_preset:
            pm = best_preset.final_metrics()
            summary["speedup_vs_best_preset"] = round(speedup(pm, wm, s.objective), 4)
            summary["speedups"] = {o: round(speedup(pm, wm, o), 4) for o in OBJECTIVES}
        self.winner, self.best_preset, self.summary = winner, best_preset, summary
        write_outputs(self)
        return summary


def _round(m: dict | None) -> dict | None:
    if m is None:
        return None
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()
            if k in METRICS or k == "rounds"}


# ---------------------------------------------------------------------------------------------- outputs
def winner_config(search: Search) -> ModelConfig:
    s, w = search.s, search.winner
    engine = s.engine_label()
    from pocketlm.runtime.hardware import cpu_name

    return w.cfg.replace(
        name=f"pocketlm-search-{format_count(s.budget).lower()}",
        source=f"pocketlm search --budget {format_count(s.budget)} ({s.budget_kind}) on {cpu_name()}, {engine}, "
               f"objective {s.objective} ({s.prompt_len}+{s.decode_len} tokens), {time.strftime('%Y-%m-%d')}")


def pareto_front(units: list[Unit], objective: str) -> list[Unit]:
    """Measured units no other unit beats on both speed and non-embedding parameters."""
    pts = [u for u in units if u.best_metrics()]
    pts.sort(key=lambda u: (-u.params["non_embedding"], objective_cost(u.best_metrics(), objective)))
    front, best = [], math.inf
    for u in pts:  # walking from most params down, keep each that is faster than all bigger ones
        c = objective_cost(u.best_metrics(), objective)
        if c < best:
            front.append(u)
            best = c
    return front[::-1]


def write_outputs(search: Search) -> None:
    out = search.s.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = winner_config(search)
    _atomic(out / "config.json", json.dumps(cfg.to_hf_dict(), indent=2) + "\n")
    _atomic(out / "summary.json", json.dumps(search.summary, indent=2, default=_json_default) + "\n")
    plot_pareto(search, out / "pareto.png")
    _atomic(out / "report.md", render_report(search, cfg))


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _shape(cfg: ModelConfig) -> str:
    return (f"{cfg.hidden_size}x{cfg.num_layers}, {cfg.num_heads}h/{cfg.num_kv_heads}kv d{cfg.head_dim}, "
            f"FFN {cfg.intermediate_size} {cfg.activation}")


def render_report(search: Search, cfg: ModelConfig) -> str:
    s, sm = search.s, search.summary
    metric, label, unit, lower = OBJECTIVES[s.objective]
    w, bp = search.winner, search.best_preset
    from pocketlm.runtime.hardware import cpu_name

    lines = [f"# pocketlm search: {format_count(s.budget)} {s.budget_kind} parameters", ""]
    lines += [f"- machine: {cpu_name()}, {s.engine_label()}",
              f"- budget: {search.s.constraints().describe()}, vocab {s.vocab_size:,}"
              + (f", weights ≤ {s.max_weight_mb:g} MB ({s.precision})" if s.max_weight_mb else "")
              + (f", KV cache ≤ {s.max_kv_mb:g} MB at {s.kv_context} tokens" if s.max_kv_mb else ""),
              f"- workload: {s.prompt_len}-token prompt + {s.decode_len} decoded tokens, batch 1; objective: "
              f"{label} ({s.objective})",
              f"- space: {search.space.source}; {sm['space_shapes']:,} shapes, {sm['candidates']:,} within budget "
              f"and caps, {sm['engine_shapes']:,} distinct on the engine",
              f"- measured: {sm['measured_candidates']} candidates + {sm['measured_baselines']} preset variants "
              f"(screening: 1 warm-up + {s.repeats} runs each), then {len(search.finalists)} finalists × "
              f"{s.final_rounds} alternating rounds; stopped: {sm['stop_reason']}",
              f"- latency model (pocketlm.search.latency) error on candidates before they were measured: "
              + (f"{sm['latency_model_error']:.1%} median" if sm["latency_model_error"] is not None else "n/a"),
              f"- wall time: {sm['runtime_s']:.0f} s ({sm['new_measurements']} new measurements, "
              f"{sm['reused_measurements']} reused from results.jsonl)", ""]

    wm = w.final_metrics()
    lines += ["## Winner", "", f"**{w.name}** — {_shape(w.cfg)}, {'tied' if w.cfg.tie_embeddings else 'untied'} "
              f"embeddings, vocab {w.cfg.vocab_size:,}: {format_count(w.params['total'])} params "
              f"({format_count(w.params['non_embedding'])} non-embedding)", ""]
    if not w.cfg.tie_embeddings:
        lines += [f"Untied: {format_count(w.cfg.vocab_size * w.cfg.hidden_size)} of its budget is an input "
                  "lookup table that costs nothing per token, which is part of its speed. Compare non-embedding "
                  "counts for capability (below), or search tied shapes only with `tie_embeddings: [true]` in "
                  "a --space file.", ""]
    if w.measured_as != "native":
        lines += [f"Timed as a {SUBSTITUTE}: llama.cpp has no {w.cfg.activation}-gated llama MLP, so the same "
                  "shape ran with SiLU (identical matmuls and bytes). To run it on llama.cpp, train it with "
                  "`activation: silu`.", ""]
    if bp:
        pm = bp.final_metrics()
        lines += [f"Against the fastest published preset within ±{BASELINE_WINDOW:.0%} of the budget, "
                  f"**{bp.name}**{' (timed as ' + SUBSTITUTE + ')' if bp.measured_as != 'native' else ''}, "
                  f"measured side by side ({s.final_rounds} alternating rounds, medians):", "",
                  "| | params | non-embedding | e2e s | TTFT s | prefill tok/s | decode tok/s | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for unit, m in ((w, wm), (bp, pm)):
            lines.append(f"| {unit.name} | {format_count(unit.params['total'])} | "
                         f"{format_count(unit.params['non_embedding'])} | {m['e2e_s']:.3f} | {m['ttft_s']:.3f} | "
                         f"{m['prefill_tok_s']:.0f} | {m['decode_tok_s']:.1f} | "
                         f"{m.get('peak_rss_mb', float('nan')):.0f} |")
        sp = sm["speedups"]
        lines += ["", f"**Speedup: {sp[s.objective]:.2f}x on {label}** (e2e {sp['e2e']:.2f}x, decode "
                  f"{sp['decode']:.2f}x, prefill {sp['prefill']:.2f}x, TTFT {sp['ttft']:.2f}x); measurement "
                  f"spread ±{search.spread(w):.1%} (winner), ±{search.spread(bp):.1%} (preset).", ""]
    else:
        lines += [f"No published preset lies within ±{BASELINE_WINDOW:.0%} of the budget, so there is no "
                  "baseline to compare with.", ""]
    lines += ["Use it (config.json is a Hugging Face LlamaForCausalLM config):", "", "```",
              f"pocketlm init {s.out / 'config.json'} --out runs/{cfg.name}        # random-init checkpoint",
              f"pocketlm pretrain {'phonelm-1.5b' if s.budget >= 1e9 else 'phonelm-0.5b'} --model "
              f"{s.out / 'config.json'}   # PhoneLM's recipe, this shape",
              "```", ""]

    lines += ["## Finals (measured side by side, alternating)", "",
              f"| rank | name | role | shape | params | {label} | spread | prefill tok/s | decode tok/s | measured as |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for i, u in enumerate(sorted((u for u in search.finalists if u.final_metrics()), key=search.cost), 1):
        m = u.final_metrics()
        lines.append(f"| {i} | {u.name} | {u.role} | {_shape(u.cfg)} | {format_count(u.params['total'])} | "
                     f"{m[metric]:.4g} {unit} | ±{search.spread(u):.1%} | {m['prefill_tok_s']:.0f} | "
                     f"{m['decode_tok_s']:.1f} | {u.measured_as} |")

    lines += ["", "## Presets (screening measurement)", "",
              "| name | variant | shape | vocab | params | non-emb | e2e s | TTFT s | prefill tok/s | decode tok/s | measured as |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for u in sorted((u for u in search.baselines if u.screen), key=search.screen_cost):
        lines.append(_row(u, u.screen, extra=[u.variant]))
    if not search.baselines:
        lines.append("| (none within the window) |||||||||||")

    lines += ["", "## All measured candidates, ranked (screening measurement)", "",
              "| rank | name | shape | vocab | params | non-emb | e2e s | TTFT s | prefill tok/s | decode tok/s | measured as | predicted |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ranked = sorted((u for u in search.units if u.screen and not u.screen.get("error")), key=search.screen_cost)
    for i, u in enumerate(ranked, 1):
        pred = f"{u.predicted[metric]:.4g}" if u.predicted else "—"
        lines.append(f"| {i} " + _row(u, u.screen, extra=[], tail=[pred]))
    errors = [u for u in search.units + search.baselines if u.screen and u.screen.get("error")]
    if errors:
        lines += ["", "Failed measurements: " + "; ".join(f"{u.name}: {u.screen['error']}" for u in errors)]

    front = pareto_front([u for u in search.units if u.screen], s.objective)
    lines += ["", "## Pareto frontier: speed vs non-embedding parameters", "",
              "Candidates no other measured candidate beats on both (more non-embedding parameters is the usual "
              "proxy for capability at a fixed budget). See pareto.png.", "",
              f"| name | non-emb params | {label} |", "|---|---|---|"]
    for u in front:
        lines.append(f"| {u.name} | {format_count(u.params['non_embedding'])} | "
                     f"{u.best_metrics()[metric]:.4g} {unit} |")
    subst = [u for u in search.units + search.baselines if u.screen and u.measured_as != "native"]
    lines += ["", "## Notes", ""]
    if subst:
        lines.append(f"- {len(subst)} measured shapes use an activation llama.cpp lacks and were timed as a "
                     f"{SUBSTITUTE} on the same shape ({', '.join(u.name for u in subst[:6])}"
                     f"{', ...' if len(subst) > 6 else ''}).")
    if search.skipped:
        lines.append("- skipped (engine cannot run): " + "; ".join(f"{n}× {p}" for p, n in search.skipped.items()))
    lines.append("- every measurement (config, params, all metrics, spreads, role) is in results.jsonl; rerunning "
                 "the same command reuses it.")
    lines.append("- random weights: speed does not depend on the values; the ranking says nothing about quality "
                 "beyond the parameter count.")
    return "\n".join(lines) + "\n"


def _row(u: Unit, m: dict, extra: list[str], tail: list[str] = ()) -> str:
    cells = [u.name, *extra, _shape(u.cfg), f"{u.cfg.vocab_size:,}", format_count(u.params["total"]),
             format_count(u.params["non_embedding"]), f"{m['e2e_s']:.3f}", f"{m['ttft_s']:.3f}",
             f"{m['prefill_tok_s']:.0f}", f"{m['decode_tok_s']:.1f}", u.measured_as, *tail]
    return "| " + " | ".join(cells) + " |"


def plot_pareto(search: Search, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = search.s
    metric, label, unit, _ = OBJECTIVES[s.objective]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    cands = [u for u in search.units if u.best_metrics()]
    ax.scatter([u.params["non_embedding"] / 1e6 for u in cands], [u.best_metrics()[metric] for u in cands],
               s=18, c="#9aa5b1", label="measured candidates")
    front = pareto_front(cands, s.objective)
    ax.plot([u.params["non_embedding"] / 1e6 for u in front], [u.best_metrics()[metric] for u in front],
            "-o", c="#1f77b4", ms=4, label="Pareto frontier")
    for u in search.baselines:
        m = u.best_metrics()
        if m:
            marker = "s" if u.variant == "published" else "D"
            ax.scatter([u.params["non_embedding"] / 1e6], [m[metric]], marker=marker, s=50, c="#d62728"
                       if u.variant == "published" else "#ff9896", zorder=3)
            ax.annotate(u.name, (u.params["non_embedding"] / 1e6, m[metric]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
    w = search.winner
    ax.scatter([w.params["non_embedding"] / 1e6], [w.final_metrics()[metric]], marker="*", s=220, c="#2ca02c",
               zorder=4, label=f"winner {w.name}")
    ax.scatter([], [], marker="s", c="#d62728", label="presets (published)")
    ax.set_xlabel("non-embedding parameters (M)")
    ax.set_ylabel(f"{label} ({unit}){' — lower is better' if OBJECTIVES[s.objective][3] else ' — higher is better'}")
    ax.set_title(f"pocketlm search, {format_count(s.budget)} {s.budget_kind} params, {s.engine_label()}\n"
                 f"workload {s.prompt_len}+{s.decode_len} tokens", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- API + CLI
def run_search(settings: SearchSettings, measure_fn: MeasureFn | None = None, progress: bool = True,
               log: Callable[[str], None] | None = None) -> dict:
    """Run a search (resuming from OUT/results.jsonl); returns the summary dict (also OUT/summary.json)."""
    search = Search(settings, measure_fn=measure_fn, progress=progress, log=log)
    try:
        return search.run()
    except KeyboardInterrupt:
        (log or print)(f"interrupted: {search.new_measurements} new measurements are saved in "
                       f"{settings.out / 'results.jsonl'}; rerun the same command to resume")
        raise


def _fresh(out: Path) -> None:
    res = out / "results.jsonl"
    if res.exists():  # never lose work: set the old cache aside
        res.rename(out / f"results.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="find the fastest architecture for a parameter budget on this machine",
        description="Hardware-aware architecture search (PhoneLM): enumerate the shapes within a parameter "
                    "budget, rank them with the latency model, time the promising ones on the real engine with "
                    "random weights, and compare the winner with the published presets of that size. Writes "
                    "results.jsonl, report.md, pareto.png and the winner's config.json to --out.")
    g = p.add_argument_group("budget")
    g.add_argument("--budget", default="0.5B", metavar="N", help="parameter budget: 0.5B, 500M or 500000000 (default 0.5B)")
    g.add_argument("--budget-kind", default="total", choices=BUDGET_KINDS,
                   help="count total or non-embedding parameters (default total)")
    g.add_argument("--tolerance", type=float, default=0.05, metavar="F", help="relative tolerance around the budget (0.05)")
    g.add_argument("--max-weight-mb", type=float, default=None, metavar="MB", help="cap on weight memory at the target precision")
    g.add_argument("--max-kv-mb", type=float, default=None, metavar="MB", help="cap on F16 KV-cache memory at --kv-context")
    g.add_argument("--kv-context", type=int, default=2048, metavar="T", help="context length for --max-kv-mb (2048)")
    g.add_argument("--vocab-size", type=int, default=49152, metavar="V",
                   help="vocabulary of the tokenizer you will train with (default 49152)")
    g.add_argument("--space", default=None, metavar="FILE", help="search-space YAML (default: pocketlm's built-in space)")
    w = p.add_argument_group("workload and engine")
    w.add_argument("--prompt-len", type=int, default=256, metavar="T", help="prompt tokens (256)")
    w.add_argument("--decode-len", type=int, default=128, metavar="T", help="decoded tokens (128)")
    w.add_argument("--objective", default="e2e", choices=list(OBJECTIVES),
                   help="e2e = latency of the whole workload (default), decode/prefill tok/s, ttft")
    w.add_argument("--backend", default="llamacpp", choices=BACKENDS, help="engine to time on (llamacpp)")
    w.add_argument("--quant", default="q4_0", metavar="Q", help="llama.cpp weight type: f32, f16, q8_0, q4_0 (q4_0)")
    w.add_argument("--dtype", default="float32", metavar="D", help="torch backend dtype (float32)")
    w.add_argument("--threads", type=int, default=None, metavar="N", help="engine threads (default: all cores)")
    m = p.add_argument_group("method")
    m.add_argument("--max-measure", type=int, default=40, metavar="N", help="most candidate shapes to time (40)")
    m.add_argument("--time-budget", type=float, default=480, metavar="S",
                   help="seconds for the search (480); soft: the initial sample, one guided round and the "
                        "finals always run")
    m.add_argument("--repeats", type=int, default=2, metavar="N", help="timed runs per screening measurement (2)")
    m.add_argument("--finalists", type=int, default=3, metavar="N", help="candidates re-timed against the presets (3)")
    m.add_argument("--final-rounds", type=int, default=3, metavar="N", help="alternating rounds in the finals (3)")
    m.add_argument("--seed", type=int, default=0, metavar="N", help="seed for sampling and random weights (0)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default runs/search-<budget>)")
    p.add_argument("--fresh", action="store_true", help="ignore (and set aside) cached measurements in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    budget = parse_budget(args.budget)
    out = Path(args.out or f"runs/search-{format_count(budget)}")
    settings = SearchSettings(
        budget=budget, out=out, budget_kind=args.budget_kind, tolerance=args.tolerance,
        vocab_size=args.vocab_size, max_weight_mb=args.max_weight_mb, max_kv_mb=args.max_kv_mb,
        kv_context=args.kv_context, space=args.space, prompt_len=args.prompt_len, decode_len=args.decode_len,
        objective=args.objective, backend=args.backend, quant=args.quant, dtype=args.dtype, threads=args.threads,
        max_measure=args.max_measure, time_budget=args.time_budget, repeats=args.repeats,
        finalists=args.finalists, final_rounds=args.final_rounds, seed=args.seed)
    settings.constraints()  # validate flags before touching anything
    if args.backend == "llamacpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise UserError("the llamacpp backend needs llama-cpp-python (pip install 'pocketlm[runtime]'), "
                            "or use --backend torch") from None
    if args.fresh:
        _fresh(out)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    import signal

    def _term(signum, frame):  # `kill` behaves like Ctrl-C: exported GGUFs are cleaned up, cache kept
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    summary = run_search(settings, progress=not args.no_progress, log=log)
    if args.json:
        from pocketlm.utils import print_json

        print_json(summary)
    else:
        print_summary(summary)
    return 0


def print_summary(sm: dict) -> None:
    metric, label, unit, _ = OBJECTIVES[sm["objective"]]
    cfg = ModelConfig.from_dict(sm["winner_config"])
    wm = sm["winner_metrics"]
    print()
    tied = "tied" if cfg.tie_embeddings else "untied"
    print(f"winner: {sm['winner']} — {_shape(cfg)}, {tied} embeddings, vocab {cfg.vocab_size:,}, "
          f"{format_count(sm['winner_params_total'])} params ({format_count(sm['winner_params_non_embedding'])} "
          f"non-embedding){' [timed as ' + SUBSTITUTE + ']' if sm['winner_measured_as'] != 'native' else ''}")
    print(f"  {sm['prompt_len']}-token prompt + {sm['decode_len']} new tokens on {sm['engine']}: "
          f"{wm['e2e_s']:.2f} s end to end (prefill {wm['prefill_tok_s']:.0f} tok/s, "
          f"decode {wm['decode_tok_s']:.1f} tok/s)")
    if sm["best_preset"]:
        pm = sm["best_preset_metrics"]
        sp = sm["speedups"]
        print(f"fastest published preset of that size: {sm['best_preset']} "
              f"({format_count(sm.get('best_preset_params_total') or 0)} params, "
              f"{format_count(sm.get('best_preset_params_non_embedding') or 0)} non-embedding): {pm['e2e_s']:.2f} s end to end "
              f"(prefill {pm['prefill_tok_s']:.0f} tok/s, decode {pm['decode_tok_s']:.1f} tok/s)")
        print(f"speedup: {sp[sm['objective']]:.2f}x on {label} (decode {sp['decode']:.2f}x, prefill "
              f"{sp['prefill']:.2f}x), measured side by side; spread ±{sm['winner_spread']:.1%}")
    else:
        print("no published preset within ±10% of the budget to compare with")
    out = Path(sm["out"])
    print(f"wrote {out / 'config.json'} (ready for `pocketlm init` / `pocketlm pretrain`), report.md, "
          f"pareto.png, results.jsonl in {sm['runtime_s']:.0f} s")
    recipe = "phonelm-1.5b" if sm["budget"] >= 1e9 else "phonelm-0.5b"
    print(f"next: pocketlm pretrain {recipe} --model {out / 'config.json'}   (PhoneLM's recipe, this shape)")


__all__ = ["SearchSettings", "Search", "run_search", "OBJECTIVES", "objective_cost", "speedup", "ResultStore",
           "engine_config", "pareto_front", "register"]
