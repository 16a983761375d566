"""`pocketlm bench`: the SlimLM device study on this machine, against the memory-bandwidth roofline.

For every model (preset, config, checkpoint or GGUF) x precision x context length it measures, on the
chosen runtime (llama.cpp by default, the engine that counts on a device): time to first token,
prefill tok/s, decode tok/s for tokens generated after a prompt of that length, and peak RSS; then
compares decode with the roofline: at batch 1 each token reads every weight plus the KV cache once,
so decode tok/s <= bandwidth / decode_bytes(position, precision) (pocketlm.model.costs).

Context lengths: a length no model can hold (prompt + decode tokens > max_position_embeddings) is
an error; a length only some models can't hold is skipped for those models, with a note.
Bandwidth: measured once per host and cached (pocketlm.runtime.hardware), or given with --bandwidth.
Peak RSS is the process's high-water mark during each measurement (reset before it on Linux;
elsewhere it spans the whole process, so run one model per call for clean memory figures).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.model import costs
from pocketlm.model.config import ModelConfig
from pocketlm.model.presets import resolve_config
from pocketlm.runtime import hardware
from pocketlm.runtime.engine import load_runtime
from pocketlm.runtime.gguf import QUANTS, llamacpp_problems, read_gguf
from pocketlm.runtime.timing import measure
from pocketlm.model.costs import cost_precision
from pocketlm.utils import atomic_path, atomic_write_json

DEFAULT_CONTEXTS = (128, 256, 512, 1024, 2048)
DEFAULT_QUANTS = {"llamacpp": "f16,q8_0,q4_0", "torch": "bf16"}
TORCH_DTYPES = {"f32": "float32", "fp32": "float32", "bf16": "bfloat16", "f16": "float16", "fp16": "float16"}
KV_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}  # torch backend: KV cache in the model dtype


@dataclass
class Target:
    """One model at one precision."""

    label: str
    spec: str
    quant: str
    cfg: ModelConfig
    gguf: bool = False


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise UserError(f"{flag} must be positive integers, got {text!r}")
    return sorted(set(values))


def _label(spec: str) -> str:
    p = Path(spec)
    return p.stem if p.suffix in (".gguf", ".yaml", ".yml", ".json") else (p.name or spec)


def plan_targets(models: list[str], quants: list[str], backend: str) -> list[Target]:
    """Resolve every MODEL argument (cheaply: configs and GGUF headers only) into targets."""
    targets = []
    for spec in models:
        if str(spec).endswith(".gguf"):
            if backend != "llamacpp":
                raise UserError(f"{spec}: a GGUF file runs on the llamacpp backend only")
            info = read_gguf(spec)
            if info["config"] is None:
                raise UserError(f"{spec}: cannot read a llama/qwen2 config from its metadata")
            quant = info["quant"]
            try:
                cost_precision(quant)
            except UserError:
                raise UserError(f"{spec}: precision {quant} is not one pocketlm can cost (f32, f16, q8_0, q4_0)") from None
            targets.append(Target(_label(spec), spec, quant, info["config"], gguf=True))
            continue
        cfg = resolve_config(spec)
        if backend == "llamacpp":
            problems = llamacpp_problems(cfg)
            if problems:
                raise UserError(f"{spec}: llama.cpp cannot run this config: " + "; ".join(problems))
        targets += [Target(_label(spec), spec, q, cfg) for q in quants]
    return targets


def plan_contexts(targets: list[Target], contexts: list[int], decode_tokens: int) -> tuple[dict[int, list[int]], list[str]]:
    """Contexts per target; a context no target can hold is a UserError, others are skipped with a note."""
    per_target, notes = {}, []
    for c in contexts:
        if not any(c + decode_tokens <= t.cfg.max_position_embeddings for t in targets):
            longest = max(t.cfg.max_position_embeddings for t in targets)
            raise UserError(f"context {c} + {decode_tokens} decode tokens exceeds the maximum context of "
                            f"{'every model' if len({t.spec for t in targets}) > 1 else 'the model'} ({longest} positions); "
                            "use shorter --contexts or fewer --decode-tokens")
    for i, t in enumerate(targets):
        ok = [c for c in contexts if c + decode_tokens <= t.cfg.max_position_embeddings]
        skipped = [c for c in contexts if c not in ok]
        if skipped:
            notes.append(f"{t.label} ({t.quant}): skipped context(s) {', '.join(map(str, skipped))} "
                         f"(max {t.cfg.max_position_embeddings} positions incl. {decode_tokens} decode tokens)")
        per_target[i] = ok
    return per_target, notes


def decode_bytes_mean(cfg: ModelConfig, quant: str, start: int, n: int, kv_bytes: float) -> float:
    """Mean bytes read per decode step over n tokens from position `start` (linear in position)."""
    prec = cost_precision(quant)
    return (costs.decode_bytes(cfg, start, prec, kv_bytes) + costs.decode_bytes(cfg, start + n - 1, prec, kv_bytes)) / 2


def run_bench(models: list[str], backend: str = "llamacpp", quants: list[str] | None = None,
              contexts: list[int] = list(DEFAULT_CONTEXTS), decode_tokens: int = 32, repeats: int = 3,
              warmup: int = 1, bandwidth: str | float | None = None, threads: int | None = None,
              seed: int = 0, progress: bool = True, log=print) -> dict:
    """Measure every target x context; returns the results dict that results.json holds."""
    if backend not in ("llamacpp", "torch"):
        raise UserError(f"unknown backend '{backend}'; choose llamacpp or torch")
    quants = quants or DEFAULT_QUANTS[backend].split(",")
    for q in quants:
        if backend == "torch" and q not in TORCH_DTYPES:
            raise UserError(f"torch backend precision must be one of f32, bf16, f16; got '{q}'")
        if backend == "llamacpp" and q not in QUANTS:
            raise UserError(f"unknown llama.cpp precision '{q}'; choose from {', '.join(QUANTS)}")
    if decode_tokens <= 0 or repeats <= 0 or warmup < 0:
        raise UserError("--decode-tokens and --repeats must be positive")
    if threads is not None and threads <= 0:
        raise UserError(f"--threads must be positive, got {threads}")
    targets = plan_targets(models, quants, backend)
    per_target, notes = plan_contexts(targets, contexts, decode_tokens)
    threads = threads or hardware.default_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > hardware.default_threads() - 0.5:
        notes.append(f"load average was {load:.1f} on {hardware.default_threads()} cores at the start: other "
                     "processes compete for the CPU, so timings (llama.cpp's spinning threads especially) "
                     "are slower and noisier than on an idle machine")
    bw, bw_source = hardware.resolve_bandwidth(bandwidth, threads, log=log)

    from tqdm import tqdm

    records = []
    total = sum(len(v) for v in per_target.values())
    bar = tqdm(total=total, desc="bench", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        for i, t in enumerate(targets):
            ctxs = per_target[i]
            if not ctxs:
                continue
            n_ctx = min(max(ctxs) + decode_tokens + 1, t.cfg.max_position_embeddings)
            dtype = TORCH_DTYPES.get(t.quant, "float32")
            kv_bytes = KV_BYTES[dtype] if backend == "torch" else 2  # llama.cpp's KV cache is F16
            bar.set_description(f"{t.label} {t.quant}: loading")
            rt = load_runtime(t.spec, backend=backend, quant=t.quant, threads=threads, n_ctx=n_ctx,
                              dtype=dtype, seed=seed)
            try:
                for c in ctxs:
                    bar.set_description(f"{t.label} {t.quant} ctx {c}")
                    m = measure(rt, c, decode_tokens, repeats=repeats, warmup=warmup, seed=seed)
                    nbytes = decode_bytes_mean(t.cfg, t.quant, c, decode_tokens, kv_bytes)
                    roof = bw * 1e9 / nbytes
                    records.append({
                        "model": t.label, "spec": t.spec, **m, "backend": backend, "quant": t.quant,
                        "threads": threads, "params": costs.param_groups(t.cfg)["total"],
                        "config": t.cfg.to_dict(), "decode_bytes_per_token": nbytes, "roofline_tok_s": roof,
                        "roofline_fraction": m["decode_tok_s"] / roof,
                    })
                    bar.set_postfix(decode=f"{m['decode_tok_s']:.1f} tok/s", roofline=f"{m['decode_tok_s'] / roof:.2f}")
                    bar.update(1)
            finally:
                rt.close()
    finally:
        bar.close()
    return {
        "version": 1, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": hardware.machine_info(),
        "backend": backend, "threads": threads, "bandwidth_gbs": bw, "bandwidth_source": bw_source,
        "contexts": contexts, "decode_tokens": decode_tokens, "repeats": repeats, "warmup": warmup,
        "notes": notes, "records": records,
    }


# ---------------------------------------------------------------------------- output
def format_table(results: dict) -> str:
    lines = [f"backend {results['backend']}, {results['threads']} threads, bandwidth "
             f"{results['bandwidth_gbs']:.1f} GB/s ({results['bandwidth_source']}), decode "
             f"{results['decode_tokens']} tokens after the prompt, median of {results['repeats']} repeats "
             "(± half the max-min range)"]
    head = (f"{'model':<20} {'prec':<5} {'ctx':>5} {'TTFT s':>8} {'prefill tok/s':>13} {'decode tok/s':>15} "
            f"{'roofline':>9} {'% roof':>7} {'RSS MB':>7}")
    lines += [head, "-" * len(head)]
    for r in results["records"]:
        spread = r.get("decode_spread")  # (max - min) / median over the repeats
        dec = f"{r['decode_tok_s']:.1f}" + (f" ±{50 * spread:.0f}%" if isinstance(spread, (int, float)) else "")
        lines.append(f"{r['model'][:20]:<20} {r['quant']:<5} {r['prompt_len']:>5} {r['ttft_s']:>8.3f} "
                     f"{r['prefill_tok_s']:>13.1f} {dec:>15} {r['roofline_tok_s']:>9.1f} "
                     f"{100 * r['roofline_fraction']:>6.0f}% {r.get('peak_rss_mb', float('nan')):>7.0f}")
    for n in results.get("notes", []):
        lines.append(f"note: {n}")
    lines.append("roofline = bandwidth / bytes read per decode step (weights + KV cache) at that context")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    series: dict[tuple[str, str], list[dict]] = {}
    for r in results["records"]:
        series.setdefault((r["model"], r["quant"]), []).append(r)
    for (model, quant), rows in series.items():
        rows = sorted(rows, key=lambda r: r["prompt_len"])
        x = [r["prompt_len"] for r in rows]
        (line,) = ax1.plot(x, [r["ttft_s"] for r in rows], marker="o", label=f"{model} {quant}")
        ax2.plot(x, [r["decode_tok_s"] for r in rows], marker="o", color=line.get_color(), label=f"{model} {quant}")
        ax3.plot(x, [r["roofline_fraction"] for r in rows], marker="o", color=line.get_color())
    for ax, title in ((ax1, "time to first token (s)"), (ax2, "decode tok/s"),
                      (ax3, "decode / bandwidth roofline")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (prompt tokens)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax1.set_yscale("log")
    ax2.set_yscale("log")
    ax3.set_ylim(0, max(1.05, max(r["roofline_fraction"] for r in results["records"]) * 1.05))
    ax2.legend(fontsize=8)
    fig.suptitle(f"pocketlm bench: {results['backend']}, {results['threads']} threads, "
                 f"{results['bandwidth_gbs']:.0f} GB/s, {results['machine'].get('cpu', '')}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_outputs(results: dict, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot(results, out_dir / "bench.png") if results["records"] else None
    results["files"] = {"results": str(out_dir / "results.json"), "plot": str(png) if png else None}
    atomic_write_json(out_dir / "results.json", results)
    return results
