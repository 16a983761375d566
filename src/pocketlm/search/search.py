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
3. re-time the finalists and the fastest presets (as published, and at the search's vocabulary so the
   architecture alone can be compared) side by side, alternating, and rank them on those medians: the
   final ranking uses measured numbers only.

Every measurement is appended (fsync'd) to OUT/results.jsonl as soon as it is taken; a rerun of the
same command reuses them, so an interrupted search resumes where it stopped. The winner's config.json
(Hugging Face format) is ready for `pocketlm init` / `pocketlm pretrain`; pocketlm.search.report
writes it with summary.json, report.md and pareto.png.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
import sys
import time
from typing import Any, Callable

from tqdm import tqdm

from pocketlm.errors import UserError
from pocketlm.model import costs
from pocketlm.search.latency import LatencyModel
from pocketlm.search.measure import EngineMeasurer
from pocketlm.search.report import write_outputs
from pocketlm.search.settings import (BASELINE_WINDOW, METRICS, OBJECTIVES, MeasureFn, SearchSettings,
                                      objective_cost, speedup)
from pocketlm.search.space import SearchSpace, enumerate_space, features
from pocketlm.search.store import ResultStore
from pocketlm.search.units import Unit, baseline_units, candidate_units
from pocketlm.utils import os_error_of


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
            if os_error_of(e) is not None:  # a full disk is not the shape's fault: stop, cache no failure
                raise
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
        n = self.s.finalists + len(self.baseline_finalists())
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
        keep = self.top(self.s.finalists + 2) + self.baseline_finalists()
        self.engine.prune(u.measured_cfg for u in keep)

    def best_baselines(self, k: int, same_vocab: bool = False) -> list[Unit]:
        """The k fastest measured presets: as published, or at the search's vocabulary (a published
        preset that already has it counts as both)."""
        measured = [u for u in self.baselines if u.screen and not u.screen.get("error") and
                    (u.cfg.vocab_size == self.s.vocab_size if same_vocab else u.variant == "published")]
        return sorted(measured, key=self.screen_cost)[:k]

    def baseline_finalists(self) -> list[Unit]:
        """The presets re-timed in the finals: the two fastest as published (what a user would pick) and
        the two fastest at the search's vocabulary (the same shapes, so the architecture alone is compared)."""
        picked: list[Unit] = []
        for u in self.best_baselines(2) + self.best_baselines(2, same_vocab=True):
            if not any(u is p for p in picked):
                picked.append(u)
        return picked

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
            (s.finalists + min(4, len(self.baselines))) * s.final_rounds  # corrected once the finalists are known
        if self.progress:
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
        summary = self._finish()
        write_outputs(self)
        return summary

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
        finalists = self.top(s.finalists) + self.baseline_finalists()
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
        # Two ratios: against the fastest preset as published (what a user would pick instead; the
        # headline), and against the fastest preset shape at the search's vocabulary (architecture only).
        best_preset = min((u for u in presets if u.variant == "published"), key=self.cost, default=None)
        same_vocab = min((u for u in presets if u.cfg.vocab_size == s.vocab_size), key=self.cost, default=None)
        wm = winner.final_metrics()
        summary: dict[str, Any] = {
            "winner": winner.name, "objective": s.objective,
            "objective_metric": OBJECTIVES[s.objective][0],
            "winner_config": winner.cfg.to_dict(), "winner_metrics": _round(wm),
            "winner_spread": round(self.spread(winner), 4),
            "winner_measured_as": winner.measured_as,
            "winner_params_total": winner.params["total"],
            "winner_params_non_embedding": winner.params["non_embedding"],
            **self._baseline_summary("best_preset", best_preset, wm, "speedups"),
            **self._baseline_summary("best_preset_same_vocab", same_vocab, wm, "speedups_same_vocab"),
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
        self.winner, self.best_preset, self.best_preset_same_vocab = winner, best_preset, same_vocab
        self.summary = summary
        return summary

    def _baseline_summary(self, prefix: str, preset: Unit | None, wm: dict, speedups_key: str) -> dict:
        """Summary keys of one comparison preset: its name, metrics, spread, sizes and the speedups."""
        pm = preset.final_metrics() if preset else None
        return {
            prefix: preset.name if preset else None,
            f"{prefix}_measured_as": preset.measured_as if preset else None,
            f"{prefix}_metrics": _round(pm),
            f"{prefix}_spread": round(self.spread(preset), 4) if preset else None,
            f"{prefix}_params_total": preset.params["total"] if preset else None,
            f"{prefix}_params_non_embedding": preset.params["non_embedding"] if preset else None,
            f"speedup_vs_{prefix}": round(speedup(pm, wm, self.s.objective), 4) if pm else None,
            speedups_key: {o: round(speedup(pm, wm, o), 4) for o in OBJECTIVES} if pm else None,
        }


def _round(m: dict | None) -> dict | None:
    if m is None:
        return None
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()
            if k in METRICS or k == "rounds"}



def run_search(settings: SearchSettings, measure_fn: MeasureFn | None = None, progress: bool = True,
               log: Callable[[str], None] | None = None) -> dict:
    """Run a search (resuming from OUT/results.jsonl); returns the summary dict (also OUT/summary.json)."""
    search = Search(settings, measure_fn=measure_fn, progress=progress, log=log)
    try:
        return search.run()
    except KeyboardInterrupt as e:  # one line (pocketlm.cli prints it) says what is kept
        raise type(e)(f"{search.new_measurements} new measurements are saved in "
                      f"{settings.out / 'results.jsonl'}; rerun the same command to resume") from None
