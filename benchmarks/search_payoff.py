"""Does `pocketlm search` pay off? The default search's winner against the fastest published preset of
its size, timed side by side in one run, plus the two-seed stability check.

1. Run the default search (0.5B total params, llama.cpp Q4_0, 256-token prompt + 128 decoded tokens,
   objective e2e), or reuse its output dir (`--out`; measurements are cached there, so a search that
   already ran, e.g. by `make demo`, costs nothing).
2. A/B: the winner against two presets, side by side for `--rounds` rounds: the fastest published
   preset within ±10% of the budget as published (what a user would pick instead), and the fastest
   preset shape at the search's vocabulary (e.g. qwen2.5-0.5b@v49152: the architecture alone). Every
   round loads each afresh (A B C, then C B A, ...), warms it up and times one workload; medians and
   spread (half the range over rounds, relative) of the end-to-end latency (the objective), and of
   prefill and decode speed on their own. Both ratios are printed; the target, ≥ 1.25x on the
   objective, applies to the published one.
3. Two seeds (`--seeds 0,1`): a second search with another seed (its own output dir, nothing shared)
   must pick a winner whose measured objective differs from the first's by less than the measurement
   spread; the two winners are timed side by side the same way.

Run timed things under the shared lock:
    flock /tmp/pocketlm-bench.lock .venv/bin/python benchmarks/search_payoff.py [--seeds 0,1]
Prints a table and ends with one JSON line (machine, versions, date, figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pocketlm import __version__
from pocketlm.model import costs
from pocketlm.model.config import ModelConfig
from pocketlm.model.presets import get_preset
from pocketlm.runtime.engine import load_runtime
from pocketlm.runtime.timing import measure
from pocketlm.runtime.hardware import machine_info
from pocketlm.search.measure import engine_config
from pocketlm.search.search import run_search
from pocketlm.search.settings import OBJECTIVES, SearchSettings, speedup
from pocketlm.search.space import format_count, parse_budget

TARGET = 1.25  # on the e2e ratio against the fastest preset as published


def ab_compare(cfgs: dict[str, ModelConfig], prompt_len: int, decode_len: int, rounds: int, quant: str,
               threads: int | None, seed: int) -> dict[str, dict]:
    """Time several configs side by side: every round loads each config afresh (alternating the order,
    ABBA...), warms it up and times one workload. Reloading matters: where a model's weights land in
    memory shifts its speed by a few percent for as long as it stays loaded, so one load per config
    would hide that from the spread. Returns per-config medians and spreads of e2e/ttft/prefill/decode."""
    names = list(cfgs)
    samples: dict[str, list[dict]] = {n: [] for n in names}
    engine = {}
    for n in names:
        engine[n], problem = engine_config(cfgs[n], "llamacpp")
        if engine[n] is None:
            raise SystemExit(f"llama.cpp cannot run {n}: {problem}")
    with tempfile.TemporaryDirectory(prefix="pocketlm-payoff-") as tmp:
        for r in range(rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                rt = load_runtime(engine[n], backend="llamacpp", quant=quant, threads=threads,
                                  n_ctx=prompt_len + decode_len + 16, seed=seed, cache_dir=tmp)
                try:
                    measure(rt, prompt_len, decode_len, repeats=1, warmup=1, seed=seed)  # warm-up
                    samples[n].append(measure(rt, prompt_len, decode_len, repeats=1, warmup=0, seed=seed + r))
                finally:
                    rt.close()
    out = {}
    for n, runs in samples.items():
        stats = {}
        for m, spread in (("e2e_s", "e2e_spread"), ("ttft_s", "ttft_spread"),
                          ("prefill_tok_s", "prefill_spread"), ("decode_tok_s", "decode_spread")):
            vals = [x[m] for x in runs]
            med = statistics.median(vals)
            stats[m] = med
            stats[spread] = (max(vals) - min(vals)) / 2 / med
        out[n] = stats
    return out


def preset_config(name: str) -> ModelConfig:
    """A baseline by the search's name for it: 'qwen2.5-0.5b', or 'qwen2.5-0.5b@v49152' at another vocab."""
    preset, _, vocab = name.partition("@v")
    cfg = get_preset(preset)
    return cfg.replace(vocab_size=int(vocab)) if vocab else cfg


def speedups(base: dict, new: dict) -> dict[str, float]:
    return {o: speedup(base, new, o) for o in OBJECTIVES}


def _search(budget: int, out: Path, seed: int, args) -> dict:
    settings = SearchSettings(budget=budget, out=out, seed=seed, max_measure=args.max_measure,
                              time_budget=args.time_budget, quant=args.quant, threads=args.threads)
    t0 = time.perf_counter()
    summary = run_search(settings, progress=False, log=lambda m: print(m, file=sys.stderr))
    summary["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="search output dir (default runs/search-<budget>, what "
                                                "`pocketlm search` writes); reused if it holds a search")
    ap.add_argument("--budget", default="0.5B")
    ap.add_argument("--rounds", type=int, default=6, help="alternating A/B rounds (6)")
    ap.add_argument("--seeds", default="0", help="comma-separated search seeds; two (e.g. 0,1) run the "
                                                 "stability check (default: 0 only)")
    ap.add_argument("--max-measure", type=int, default=40)
    ap.add_argument("--time-budget", type=float, default=480)
    ap.add_argument("--quant", default="q4_0")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    budget = parse_budget(args.budget)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = Path(args.out or f"runs/search-{format_count(budget)}")
    t_start = time.perf_counter()
    summaries = {}
    for i, seed in enumerate(seeds):
        out = base if i == 0 else base.with_name(f"{base.name}-seed{seed}")
        print(f"search seed {seed} -> {out}", file=sys.stderr)
        summaries[seed] = _search(budget, out, seed, args)
    first = summaries[seeds[0]]
    P, D = first["prompt_len"], first["decode_len"]
    if not first["best_preset"]:
        raise SystemExit(f"no published preset within ±10% of {format_count(budget)}: nothing to compare with")

    winner_cfg = ModelConfig.from_dict(first["winner_config"])
    preset_name, same_vocab_name = first["best_preset"], first["best_preset_same_vocab"] or first["best_preset"]
    contenders = {"winner": winner_cfg, "preset": preset_config(preset_name)}
    if same_vocab_name != preset_name:
        contenders["preset_same_vocab"] = preset_config(same_vocab_name)
    print(f"A/B: {first['winner']} vs {preset_name} (as published) and {same_vocab_name} (search vocab), "
          f"{args.rounds} alternating rounds of {P}+{D} tokens", file=sys.stderr)
    ab = ab_compare(contenders, P, D, args.rounds, args.quant, args.threads, seed=1234)
    ab.setdefault("preset_same_vocab", ab["preset"])  # the published preset already has the search's vocab
    w, p, v = ab["winner"], ab["preset"], ab["preset_same_vocab"]
    published, same_vocab = speedups(p, w), speedups(v, w)

    print()
    print(f"search winner vs fastest preset, {format_count(budget)} total params, llama.cpp "
          f"{args.quant.upper()}, {first['threads']} threads, workload {P}-token prompt + {D} tokens "
          f"({args.rounds} alternating rounds, medians ± half-range)")
    print(f"{'model':<48} {'params':>7} {'vocab':>8} {'e2e s':>14} {'TTFT s':>14} {'prefill tok/s':>16} "
          f"{'decode tok/s':>16}")
    for label, name, stats, cfg in (("winner", first["winner"], w, winner_cfg),
                                    ("published", preset_name, p, contenders["preset"]),
                                    ("same vocab", same_vocab_name, v, preset_config(same_vocab_name))):
        print(f"{label + ': ' + name:<48.48} {format_count(costs.param_groups(cfg)['total']):>7} "
              f"{cfg.vocab_size:>8,} "
              f"{stats['e2e_s']:>8.3f} ±{stats['e2e_spread']:>4.1%} {stats['ttft_s']:>8.3f} ±{stats['ttft_spread']:>4.1%} "
              f"{stats['prefill_tok_s']:>9.1f} ±{stats['prefill_spread']:>4.1%} "
              f"{stats['decode_tok_s']:>9.1f} ±{stats['decode_spread']:>4.1%}")
    for what, sp, target in ((f"vs {preset_name} as published (headline)", published,
                              f" (target ≥ {TARGET}x: {'met' if published['e2e'] >= TARGET else 'NOT met'})"),
                             (f"vs {same_vocab_name} at vocab {first['vocab_size']:,} (architecture only)",
                              same_vocab, " (no target: the target applies to the published ratio)")):
        print(f"speedup {what}: e2e {sp['e2e']:.3f}x{target}, decode {sp['decode']:.3f}x, "
              f"prefill {sp['prefill']:.3f}x, TTFT {sp['ttft']:.3f}x")
    same_vocab_search = first["speedup_vs_best_preset_same_vocab"] or first["speedup_vs_best_preset"]
    print(f"(the search's own finals said {first['speedup_vs_best_preset']:.3f}x as published, "
          f"{same_vocab_search:.3f}x at the same vocabulary; search wall time "
          f"{first['runtime_s']:.0f} s, {first['measured_candidates']} candidates + {first['measured_baselines']} "
          f"preset variants measured)")

    stability = None
    if len(seeds) >= 2:
        second = summaries[seeds[1]]
        same = first["winner"] == second["winner"]
        if same:
            ab2 = {"a": w, "b": w}
        else:
            print(f"two-seed check: timing {first['winner']} vs {second['winner']} side by side", file=sys.stderr)
            ab2 = ab_compare({"a": winner_cfg, "b": ModelConfig.from_dict(second["winner_config"])}, P, D,
                             args.rounds, args.quant, args.threads, seed=4321)
        a, b = ab2["a"], ab2["b"]
        diff = abs(a["e2e_s"] - b["e2e_s"]) / ((a["e2e_s"] + b["e2e_s"]) / 2)
        spread = max(a["e2e_spread"], b["e2e_spread"])
        stability = {"seeds": seeds[:2], "winners": [first["winner"], second["winner"]], "same_winner": same,
                     "e2e_s": [round(a["e2e_s"], 4), round(b["e2e_s"], 4)],
                     "search_objectives": [first["winner_metrics"]["e2e_s"], second["winner_metrics"]["e2e_s"]],
                     "relative_difference": round(diff, 4), "measurement_spread": round(spread, 4),
                     "within_spread": same or diff < spread,
                     "search_wall_s": [first["runtime_s"], second["runtime_s"]]}
        print(f"two seeds {seeds[0]},{seeds[1]}: winners {first['winner']} / {second['winner']}"
              f"{' (same)' if same else ''}; e2e {a['e2e_s']:.3f} s vs {b['e2e_s']:.3f} s side by side: "
              f"differ by {diff:.1%}, spread ±{spread:.1%} -> {'OK' if stability['within_spread'] else 'NOT within spread'}")

    result = {
        "benchmark": "search_payoff", "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info(),
        "pocketlm": __version__, "budget": budget, "budget_kind": first["budget_kind"], "engine": first["engine"],
        "workload": {"prompt_len": P, "decode_len": D}, "objective": first["objective"], "rounds": args.rounds,
        "winner": first["winner"], "winner_config": first["winner_config"], "preset": preset_name,
        "winner_ab": _rounded(w), "preset_ab": _rounded(p),
        "speedup": _rounded(published, 4), "target": TARGET,
        "target_met": published["e2e"] >= TARGET, "search_speedup": first["speedup_vs_best_preset"],
        "preset_same_vocab": same_vocab_name, "preset_same_vocab_ab": _rounded(v),
        "speedup_same_vocab": _rounded(same_vocab, 4), "search_speedup_same_vocab": same_vocab_search,
        "target_applies_to": "speedup (against the preset as published)",
        "search_runtime_s": first["runtime_s"], "search_stop_reason": first["stop_reason"],
        "two_seed": stability, "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(result))
    return 0


def _rounded(d: dict, digits: int = 5) -> dict:
    return {k: round(x, digits) for k, x in d.items()}


if __name__ == "__main__":
    sys.exit(main())
