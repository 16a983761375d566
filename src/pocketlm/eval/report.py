"""`pocketlm report`: the report card of one or more runs, as markdown plus PNGs.

A RUN_DIR is searched (recursively) for three kinds of results, so a pipeline output, a `pocketlm bench
--out` directory or a folder of `pocketlm eval --out` files all work:
  eval results   JSON with "tasks" and "primary" (`pocketlm eval --out FILE`, the pipeline's eval/eval.json)
  bench results  JSON with "records" and "backend" (`pocketlm bench`'s results.json)
  search         pareto.png next to a summary.json (`pocketlm search`), copied into the report
A benched model takes the scores of the eval result with its label, else of the run's only evaluated
checkpoint (the model it was exported from: its scores are measured before quantization, as marked).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.utils import atomic_path, atomic_write_text

MAX_RESULT_BYTES = 4_000_000  # tokenizer.json and other big files are not results


def _results(run: Path) -> tuple[list[dict], list[dict], list[Path]]:
    evals, benches, paretos = [], [], []
    for path in sorted(run.rglob("*.json")):
        if path.name.startswith(".") or path.stat().st_size > MAX_RESULT_BYTES:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"tasks", "primary", "label"} <= data.keys():
            evals.append(data)
        elif isinstance(data, dict) and {"records", "backend", "machine"} <= data.keys():
            benches.append({**data, "_dir": path.parent})
    paretos = [p for p in sorted(run.rglob("pareto.png")) if (p.parent / "summary.json").is_file()]
    return evals, benches, paretos


def _scores(ev: dict) -> dict[str, float]:
    return {f"{task}.{p['metric']}": ev["tasks"][task].get(p["metric"]) for task, p in ev["primary"].items()}


def _gguf_mb(spec: str, bench_dir: Path, run: Path) -> float | None:
    candidates = [Path(spec), bench_dir / spec, run / spec, *run.rglob(Path(spec).name)]
    for p in candidates:
        if p.suffix == ".gguf" and p.is_file():
            return round(p.stat().st_size / 1e6, 1)
    return None


def collect(run_dirs: list[str | os.PathLike]) -> dict:
    """The report's data: one row per (run, model, precision)."""
    rows, paretos, higher = [], [], {}
    for run in map(Path, run_dirs):
        if not run.is_dir():
            raise UserError(f"run directory not found: {run}")
        evals, benches, run_paretos = _results(run)
        if not (evals or benches or run_paretos):
            raise UserError(f"{run}: no eval, bench or search results found")
        paretos += run_paretos
        for ev in evals:
            higher.update({f"{t}.{p['metric']}": p["higher_is_better"] for t, p in ev["primary"].items()})
        by_label = {ev["label"]: ev for ev in evals}
        checkpoints = [ev for ev in evals if ev["kind"] == "checkpoint"]
        used = set()
        for b in benches:
            series: dict[tuple[str, str], list[dict]] = {}
            for r in b["records"]:
                series.setdefault((r["model"], r["quant"]), []).append(r)
            for (model, quant), recs in series.items():
                ev = by_label.get(model) or (checkpoints[0] if len(checkpoints) == 1 else None)
                if ev is not None:
                    used.add(ev["label"])
                recs.sort(key=lambda r: r["prompt_len"])
                rows.append({
                    "run": str(run), "model": model, "quant": quant, "params": recs[0]["params"],
                    "gguf_mb": _gguf_mb(recs[0]["spec"], b["_dir"], run) if b["backend"] == "llamacpp" else None,
                    "scores": _scores(ev) if ev else {},
                    "scores_from": None if ev is None else ("same model" if ev["label"] == model
                                                            else f"{ev['label']} (before export)"),
                    "efficiency": [{"context": r["prompt_len"], "ttft_s": r["ttft_s"],
                                    "prefill_tok_s": r["prefill_tok_s"], "decode_tok_s": r["decode_tok_s"],
                                    "peak_rss_mb": r.get("peak_rss_mb")} for r in recs],
                    "peak_rss_mb": max((r.get("peak_rss_mb") or 0 for r in recs), default=None),
                    "machine": b["machine"].get("cpu"),
                })
        for ev in evals:
            if ev["label"] not in used:
                rows.append({"run": str(run), "model": ev["label"], "quant": ev["kind"], "params": ev["params"],
                             "gguf_mb": None, "scores": _scores(ev), "scores_from": "same model",
                             "efficiency": [], "peak_rss_mb": None, "machine": None})
    return {"runs": [str(r) for r in run_dirs], "models": rows, "higher_is_better": higher,
            "paretos": [str(p) for p in paretos]}


def _fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_markdown(data: dict, plots: list[str], pareto_names: list[str]) -> str:
    rows = data["models"]
    metrics = sorted({m for r in rows for m in r["scores"]})
    lines = ["# pocketlm report card", "", f"Runs: {', '.join(data['runs'])}", ""]
    cpus = sorted({r["machine"] for r in rows if r["machine"]})
    if cpus:
        lines += [f"Efficiency measured on: {', '.join(cpus)} (timings on a shared machine are noisy).", ""]
    lines += ["## Models", "",
              "| model | precision | params (M) | GGUF (MB) | " + " | ".join(
                  f"{m} {'↑' if data['higher_is_better'].get(m, True) else '↓'}" for m in metrics)
              + " | decode tok/s | peak RSS (MB) |",
              "|" + "---|" * (6 + len(metrics))]
    for r in rows:
        dec = r["efficiency"][0]["decode_tok_s"] if r["efficiency"] else None
        lines.append(f"| {r['model']} | {r['quant']} | {r['params'] / 1e6:.1f} | {_fmt(r['gguf_mb'], 1)} | "
                     + " | ".join(_fmt(r["scores"].get(m), 4) for m in metrics)
                     + f" | {_fmt(dec, 1)} | {_fmt(r['peak_rss_mb'], 0)} |")
    notes = sorted({f"{r['model']}: scores of {r['scores_from']}" for r in rows
                    if r["scores_from"] not in (None, "same model")})
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines += ["", "decode tok/s at the shortest context benched.", ""]
    eff = [r for r in rows if r["efficiency"]]
    if eff:
        lines += ["## On-device efficiency (SlimLM: TTFT and throughput vs context length)", "",
                  "| model | precision | context | TTFT (s) | prefill tok/s | decode tok/s | peak RSS (MB) |",
                  "|---|---|---|---|---|---|---|"]
        for r in eff:
            for e in r["efficiency"]:
                lines.append(f"| {r['model']} | {r['quant']} | {e['context']} | {e['ttft_s']:.3f} | "
                             f"{e['prefill_tok_s']:.1f} | {e['decode_tok_s']:.1f} | {_fmt(e['peak_rss_mb'], 0)} |")
        lines.append("")
    for p in plots:
        lines += [f"![{Path(p).stem}]({Path(p).name})", ""]
    for name in pareto_names:
        lines += ["## Architecture search", "", f"![search Pareto front]({name})", ""]
    return "\n".join(lines)


def plot_capability(data: dict, path: Path) -> Path | None:
    """Capability (y, one panel per headline metric) vs decode tok/s on this machine (x)."""
    rows = [r for r in data["models"] if r["efficiency"] and r["scores"]]
    metrics = sorted({m for r in rows for m, v in r["scores"].items() if v is not None})[:4]
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for r in rows:
            if r["scores"].get(m) is None:
                continue
            x, y = r["efficiency"][0]["decode_tok_s"], r["scores"][m]
            ax.scatter([x], [y])
            ax.annotate(f"{r['model']} {r['quant']}", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(f"decode tok/s (context {rows[0]['efficiency'][0]['context']}, this machine)")
        ax.set_ylabel(m + ("" if data["higher_is_better"].get(m, True) else " (lower is better)"))
        ax.grid(alpha=0.3)
    fig.suptitle("capability vs on-device speed", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_report(run_dirs: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    data = collect(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    capability = plot_capability(data, out / "capability_vs_speed.png")
    pareto_names = []
    for i, src in enumerate(data["paretos"]):
        name = "search_pareto.png" if i == 0 else f"search_pareto_{i}.png"
        with atomic_path(out / name) as tmp:
            shutil.copyfile(src, tmp)
        pareto_names.append(name)
    plots = ([str(capability)] if capability else []) + [str(out / n) for n in pareto_names]
    atomic_write_text(out / "report.md", render_markdown(data, plots[:1] if capability else [], pareto_names))
    data["files"] = {"report": str(out / "report.md"), "plots": plots}
    return data


__all__ = ["collect", "plot_capability", "render_markdown", "write_report"]
