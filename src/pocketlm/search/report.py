"""A finished search's outputs: the winner's config.json, summary.json, report.md and pareto.png."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pocketlm.model.config import ModelConfig
from pocketlm.runtime.hardware import cpu_name
from pocketlm.search.settings import BASELINE_WINDOW, OBJECTIVES, SUBSTITUTE, objective_cost
from pocketlm.search.space import format_count
from pocketlm.search.units import Unit
from pocketlm.utils import atomic_path, atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # the search calls into this module, so only the type is imported
    from pocketlm.search.search import Search


def winner_config(search: Search) -> ModelConfig:
    s, w = search.s, search.winner
    engine = s.engine_label()
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
    atomic_write_json(out / "config.json", cfg.to_hf_dict())
    atomic_write_json(out / "summary.json", search.summary)
    plot_pareto(search, out / "pareto.png")
    atomic_write_text(out / "report.md", render_report(search, cfg))


def shape_text(cfg: ModelConfig) -> str:
    return (f"{cfg.hidden_size}x{cfg.num_layers}, {cfg.num_heads}h/{cfg.num_kv_heads}kv d{cfg.head_dim}, "
            f"FFN {cfg.intermediate_size} {cfg.activation}")


def render_report(search: Search, cfg: ModelConfig) -> str:
    s, sm = search.s, search.summary
    metric, label, metric_unit, _ = OBJECTIVES[s.objective]
    w = search.winner
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

    lines += ["## Winner", "", f"**{w.name}** — {shape_text(w.cfg)}, {'tied' if w.cfg.tie_embeddings else 'untied'} "
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
    lines += comparison_lines(search)
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
        lines.append(f"| {i} | {u.name} | {u.role} | {shape_text(u.cfg)} | {format_count(u.params['total'])} | "
                     f"{m[metric]:.4g} {metric_unit} | ±{search.spread(u):.1%} | {m['prefill_tok_s']:.0f} | "
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
                     f"{u.best_metrics()[metric]:.4g} {metric_unit} |")
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
    cells = [u.name, *extra, shape_text(u.cfg), f"{u.cfg.vocab_size:,}", format_count(u.params["total"]),
             format_count(u.params["non_embedding"]), f"{m['e2e_s']:.3f}", f"{m['ttft_s']:.3f}",
             f"{m['prefill_tok_s']:.0f}", f"{m['decode_tok_s']:.1f}", u.measured_as, *tail]
    return "| " + " | ".join(cells) + " |"


def plot_pareto(search: Search, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = search.s
    metric, label, metric_unit, _ = OBJECTIVES[s.objective]
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
    ax.scatter([], [], marker="D", c="#ff9896", label="presets at the search's vocabulary")
    ax.set_xlabel("non-embedding parameters (M)")
    ax.set_ylabel(f"{label} ({metric_unit}){' — lower is better' if OBJECTIVES[s.objective][3] else ' — higher is better'}")
    ax.set_title(f"pocketlm search, {format_count(s.budget)} {s.budget_kind} params, {s.engine_label()}\n"
                 f"workload {s.prompt_len}+{s.decode_len} tokens", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)



def comparison_lines(search: Search) -> list[str]:
    """The winner against the fastest preset as published (the headline ratio) and against the fastest
    preset shape at the search's vocabulary (architecture only), measured side by side in the finals."""
    s, sm, w = search.s, search.summary, search.winner
    _, label, _, _ = OBJECTIVES[s.objective]
    bp, bv = search.best_preset, search.best_preset_same_vocab
    if bp is None and bv is None:
        return [f"No published preset lies within ±{BASELINE_WINDOW:.0%} of the budget, so there is no "
                "baseline to compare with.", ""]
    presets = [bp] if bp is bv else [u for u in (bp, bv) if u is not None]
    lines = [f"Against the presets within ±{BASELINE_WINDOW:.0%} of the budget, measured side by side "
             f"({s.final_rounds} alternating rounds, medians):", "",
             "| | params | non-embedding | e2e s | TTFT s | prefill tok/s | decode tok/s | peak RSS MB | vocab | compared as |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for u, role in [(w, "winner")] + [(u, _comparison_role(search, u)) for u in presets]:
        m = u.final_metrics()
        lines.append(f"| {u.name} | {format_count(u.params['total'])} | {format_count(u.params['non_embedding'])} | "
                     f"{m['e2e_s']:.3f} | {m['ttft_s']:.3f} | {m['prefill_tok_s']:.0f} | {m['decode_tok_s']:.1f} | "
                     f"{m.get('peak_rss_mb', float('nan')):.0f} | {u.cfg.vocab_size:,} | {role} |")
    lines.append("")
    if bp is not None:
        lines += [_speedup_line(f"Speedup: {{:.2f}}x on {label}", sm["speedups"], s.objective, search, bp,
                                f"against the fastest published preset as published, **{bp.name}**"), ""]
    if bv is not None:
        what = ("the same preset: it already has the search's vocabulary" if bv is bp else
                f"**{bv.name}**, the fastest preset shape at the search's vocabulary of {s.vocab_size:,}")
        lines += [_speedup_line(f"Architecture only: {{:.2f}}x on {label}", sm["speedups_same_vocab"],
                                s.objective, search, bv, f"against {what}"), ""]
    lines += ["The headline speedup, and any target set on it, is the one against the published preset: that "
              "is what a user would pick instead. The architecture-only ratio compares the same preset shapes "
              "at the search's vocabulary, so the gap between the two is what the smaller vocabulary "
              "contributes.", ""]
    return lines


def _comparison_role(search: Search, u: Unit) -> str:
    roles = []
    if u is search.best_preset:
        roles.append("published (headline)")
    if u is search.best_preset_same_vocab:
        roles.append("same vocabulary (architecture only)")
    return ", ".join(roles)


def _speedup_line(head: str, sp: dict, objective: str, search: Search, preset: Unit, against: str) -> str:
    measured = f" (timed as {SUBSTITUTE})" if preset.measured_as != "native" else ""
    return (f"**{head.format(sp[objective])}** {against}{measured} (e2e {sp['e2e']:.2f}x, decode "
            f"{sp['decode']:.2f}x, prefill {sp['prefill']:.2f}x, TTFT {sp['ttft']:.2f}x); measurement spread "
            f"±{search.spread(search.winner):.1%} (winner), ±{search.spread(preset):.1%} (preset).")
