"""How close does pocketlm's llama.cpp backend get to the memory-bandwidth roofline, and what does it cost?

For two ~0.5B random-weight models exported by pocketlm (Qwen2.5-0.5B's shape, vocab 151936, and a
wide-shallow 1536x12, vocab 49152) at F32, F16, BF16, Q8_0 and Q4_0, batch 1, all cores:

1. decode tok/s through pocketlm's llama.cpp backend as a fraction of the roofline
   bandwidth / bytes-read-per-token, with bandwidth measured in this run right before each model
   (this host's bandwidth moves between runs). Target: F16 >= 0.85. The others are the diagnosis:
   F32 reads twice the bytes with the same element count, so F32 near the roofline while F16 is not
   says the memory system is fine and F16's dot-product kernel is compute-bound; BF16 (same bytes as
   F16, native AVX512-BF16 dot products) shows what a 16-bit model can reach on this CPU. Q8_0/Q4_0
   are compute-bound on 2 threads.
2. pocketlm's engine (`stream_generate`, greedy) vs raw llama-cpp-python on the same GGUF, written
   the way a user would without pocketlm: `llama_cpp.Llama(model_path=..., n_ctx, n_threads)` and
   the library's own `Llama.generate` loop (greedy sampler). Both are timed the same way: time to
   the first token (reported as prefill tok/s = prompt / TTFT) and mean time per later token,
   sampling included. Both must pick the same greedy tokens. Target: no measurable loss (>= 0.98).
   (On a host whose llama.cpp build has AMX and faults on it, the raw baseline crashes where
   pocketlm's `open_llama` works around it; pocketlm's Makefile builds without AMX.)
3. pocketlm's torch backend (bf16, the fast dtype on this CPU) vs llama.cpp F16, side by side.

Runs alternate in ABBA order (pocketlm, baseline, baseline, pocketlm, ...), medians of repeats.
Run under the shared lock:

    flock /tmp/pocketlm-bench.lock .venv/bin/python benchmarks/runtime_roofline.py

Prints a table, then ONE JSON line (machine, versions, date, all numbers).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pocketlm.model import costs

from pocketlm.runtime import hardware
from pocketlm.runtime.bench import decode_bytes_mean
from pocketlm.runtime.gguf import export_gguf
from pocketlm.model.presets import get_preset

MODELS = {
    "qwen2.5-0.5b": get_preset("qwen2.5-0.5b"),
    "wide-1536x12": get_preset("qwen2.5-0.5b").replace(
        name="wide-1536x12", vocab_size=49152, hidden_size=1536, num_layers=12, num_heads=16, num_kv_heads=4,
        head_dim=96, intermediate_size=5632, qkv_bias=False, max_position_embeddings=2048),
}


def median(xs):
    return statistics.median(xs)


def spread(xs):
    return (max(xs) - min(xs)) / median(xs) if len(xs) > 1 else 0.0


class RawLlama:
    """Baseline: plain llama-cpp-python as a user would write it, independent of pocketlm's runtime:
    `llama_cpp.Llama(model_path=...)` and the library's own greedy generate loop (sampling included)."""

    def __init__(self, path: Path, n_ctx: int, threads: int):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   verbose=False)

    def run(self, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
        """(time to the first token, mean seconds per later token, the tokens) for 1 + n greedy tokens."""
        self.llm.reset()  # a fresh prompt every run: no KV-cache prefix reuse inside generate()
        tokens, stamps = [], []
        t0 = time.perf_counter()
        for tok in self.llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            stamps.append(time.perf_counter())
            tokens.append(int(tok))
            if len(tokens) == n + 1:
                break
        return stamps[0] - t0, (stamps[-1] - stamps[0]) / n, tokens

    def close(self):
        self.llm.close()


class Pocket:
    """pocketlm's engine (either backend), timed through its public streaming API the same way."""

    def __init__(self, spec: str, backend: str, quant: str, n_ctx: int, threads: int, dtype: str = "float32"):
        from pocketlm.runtime.engine import load_runtime

        self.rt = load_runtime(spec, backend=backend, quant=quant, threads=threads, n_ctx=n_ctx, dtype=dtype)

    def run(self, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
        tokens, stamps = [], []
        t0 = time.perf_counter()
        for r in self.rt.stream_generate(prompt, max_new_tokens=n + 1):
            if r.token is not None:
                stamps.append(time.perf_counter())
                tokens.append(r.token)
        return stamps[0] - t0, (stamps[-1] - stamps[0]) / n, tokens

    def close(self):
        self.rt.close()


def alternate(runners: dict, prompt: list[int], n: int, repeats: int) -> dict:
    """Warm each runner once, then alternate repeats in ABBA order (no runner always goes first);
    per runner: median prefill (time to first token) and decode tok/s; same_tokens: all picked the
    same greedy tokens."""
    for r in runners.values():
        r.run(prompt[:16], 4)
    samples = {k: {"prefill": [], "decode": [], "tokens": None} for k in runners}
    order = list(runners.items())
    for i in range(repeats):
        for k, r in (order if i % 2 == 0 else order[::-1]):
            pre, dec, tokens = r.run(prompt, n)
            samples[k]["prefill"].append(pre)
            samples[k]["decode"].append(dec)
            samples[k]["tokens"] = tokens
    out = {}
    for k, s in samples.items():
        out[k] = {"prefill_tok_s": len(prompt) / median(s["prefill"]), "decode_tok_s": 1 / median(s["decode"]),
                  "decode_spread": spread(s["decode"]), "prefill_spread": spread(s["prefill"])}
    out["same_tokens"] = len({tuple(s["tokens"]) for s in samples.values()}) == 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--quants", default="f32,f16,bf16,q8_0,q4_0")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-torch", action="store_true", help="skip the torch-vs-llama.cpp comparison")
    ap.add_argument("--workdir", default=None, help="where to write the GGUF files (default: a temp dir)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still remove the temp GGUF files
    threads = args.threads or hardware.default_threads()
    P, N = args.prompt_len, args.decode_tokens
    rng = np.random.default_rng(0)
    t_start = time.time()
    rows, torch_rows, bandwidths, bandwidths_huge = [], [], [], []

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name in args.models.split(","):
            cfg = MODELS[name] if name in MODELS else get_preset(name)  # any preset, e.g. for a quick check
            prompt = [int(t) for t in rng.integers(10, cfg.vocab_size - 10, size=P)]
            for quant in args.quants.split(","):
                path = Path(tmp) / f"{name}-{quant}.gguf"
                t0 = time.time()
                export_gguf(cfg, path, quant=quant)
                export_s = time.time() - t0
                # bandwidth right before this model's timings: the host's figure drifts between runs
                bw = hardware.measure_bandwidth(threads, size_mb=1024, passes=5)  # 4 KiB pages, like llama.cpp
                bw_huge = hardware.measure_bandwidth(threads, size_mb=1024, passes=5, huge_pages=True)
                bandwidths.append(bw)
                bandwidths_huge.append(bw_huge)
                runners = {"pocketlm": Pocket(str(path), "llamacpp", quant, P + N + 8, threads),
                           "raw": RawLlama(path, P + N + 8, threads)}
                try:
                    res = alternate(runners, prompt, N, args.repeats)
                finally:
                    for r in runners.values():
                        r.close()
                roof = bw * 1e9 / decode_bytes_mean(cfg, quant, P, N, kv_bytes=2)
                rows.append({
                    "model": name, "quant": quant, "params": costs.param_groups(cfg)["total"],
                    "file_mb": path.stat().st_size / 1e6, "export_s": export_s, "bandwidth_gbs": bw,
                    "roofline_tok_s": roof,
                    "pocketlm": res["pocketlm"], "raw": res["raw"],
                    "roofline_fraction": res["pocketlm"]["decode_tok_s"] / roof,
                    "bandwidth_hugepages_gbs": bw_huge,
                    "hugepage_roofline_fraction": res["pocketlm"]["decode_tok_s"] / (roof * bw_huge / bw),
                    "raw_roofline_fraction": res["raw"]["decode_tok_s"] / roof,
                    "pocketlm_vs_raw_decode": res["pocketlm"]["decode_tok_s"] / res["raw"]["decode_tok_s"],
                    "pocketlm_vs_raw_prefill": res["pocketlm"]["prefill_tok_s"] / res["raw"]["prefill_tok_s"],
                    "same_tokens_as_raw": res["same_tokens"],
                })
                print(f"[{time.time() - t_start:5.0f}s] {name} {quant}: decode {res['pocketlm']['decode_tok_s']:.1f} "
                      f"tok/s ({rows[-1]['roofline_fraction']:.2f} of {roof:.1f}), raw "
                      f"{res['raw']['decode_tok_s']:.1f}", file=sys.stderr)
                path.unlink()
            if not args.no_torch:
                # torch bf16 vs llama.cpp F16 on the same shape, alternating
                path = Path(tmp) / f"{name}-f16.gguf"
                export_gguf(cfg, path, quant="f16")
                runners = {"llamacpp_f16": Pocket(str(path), "llamacpp", "f16", P + N + 8, threads),
                           "torch_bf16": Pocket(_cfg_file(cfg, tmp), "torch", "bf16", P + N + 8, threads,
                                                dtype="bfloat16")}
                try:
                    res = alternate(runners, prompt, N, max(2, args.repeats - 2))
                finally:
                    for r in runners.values():
                        r.close()
                path.unlink()
                res.pop("same_tokens")  # bf16 torch vs F16 llama.cpp: not expected to agree
                torch_rows.append({"model": name, **res,
                                   "torch_vs_llamacpp_decode": res["torch_bf16"]["decode_tok_s"]
                                   / res["llamacpp_f16"]["decode_tok_s"],
                                   "torch_vs_llamacpp_prefill": res["torch_bf16"]["prefill_tok_s"]
                                   / res["llamacpp_f16"]["prefill_tok_s"]})

    # ------------------------------------------------------------------ report
    print(f"\nbatch 1, {threads} threads, prompt {P}, decode {N} tokens, median of {args.repeats} alternating repeats")
    print(f"bandwidth measured in this run (4 KiB pages, as llama.cpp's mmapped weights): "
          f"{', '.join(f'{b:.1f}' for b in bandwidths)} GB/s; with huge pages: "
          f"{', '.join(f'{b:.1f}' for b in bandwidths_huge)} GB/s\n")
    head = (f"{'model':<14} {'prec':<5} {'BW GB/s':>7} {'roofline':>8} {'pocketlm dec':>12} {'% roof':>6} "
            f"{'raw dec':>8} {'pl/raw':>6} {'pl prefill':>10} {'raw prefill':>11} {'spread':>6} {'% huge':>6} {'same':>4}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<14} {r['quant']:<5} {r['bandwidth_gbs']:>7.1f} {r['roofline_tok_s']:>8.1f} "
              f"{r['pocketlm']['decode_tok_s']:>12.1f} {100 * r['roofline_fraction']:>5.0f}% "
              f"{r['raw']['decode_tok_s']:>8.1f} {r['pocketlm_vs_raw_decode']:>6.3f} "
              f"{r['pocketlm']['prefill_tok_s']:>10.1f} {r['raw']['prefill_tok_s']:>11.1f} "
              f"{100 * r['pocketlm']['decode_spread']:>5.1f}% {100 * r['hugepage_roofline_fraction']:>5.0f}% "
              f"{'yes' if r['same_tokens_as_raw'] else 'NO':>4}")
    if torch_rows:
        print(f"\n{'model':<14} {'llama.cpp F16 prefill/decode':>29} {'torch bf16 prefill/decode':>26} {'torch/llama decode':>19}")
        for r in torch_rows:
            a, b = r["llamacpp_f16"], r["torch_bf16"]
            print(f"{r['model']:<14} {a['prefill_tok_s']:>14.1f} / {a['decode_tok_s']:>12.1f} "
                  f"{b['prefill_tok_s']:>11.1f} / {b['decode_tok_s']:>12.1f} {r['torch_vs_llamacpp_decode']:>19.2f}")
    f16 = [r["roofline_fraction"] for r in rows if r["quant"] == "f16"]
    ratio = [r["pocketlm_vs_raw_decode"] for r in rows]
    summary = {
        **{f"{q}_roofline_fraction_min": min((r["roofline_fraction"] for r in rows if r["quant"] == q), default=None)
           for q in ("f32", "bf16")},
        "f16_roofline_fraction_min": min(f16) if f16 else None,
        "f16_target": 0.85, "f16_pass": bool(f16) and min(f16) >= 0.85,
        "pocketlm_vs_raw_decode_median": median(ratio) if ratio else None,
        "no_measurable_loss": bool(ratio) and median(ratio) >= 0.98,
        "same_tokens_as_raw": all(r["same_tokens_as_raw"] for r in rows),
    }
    f16_text = (f"F16 decode at {summary['f16_roofline_fraction_min']:.2f} of the roofline (target >= 0.85: "
                f"{'PASS' if summary['f16_pass'] else 'FAIL'})" if f16 else "F16 not run")
    print(f"\n{f16_text}; pocketlm/raw llama-cpp-python decode {summary['pocketlm_vs_raw_decode_median']:.3f} "
          f"(target >= 0.98: {'PASS' if summary['no_measurable_loss'] else 'FAIL'}); same greedy tokens as raw: "
          f"{'yes' if summary['same_tokens_as_raw'] else 'NO'}; {time.time() - t_start:.0f} s total")
    print(json.dumps({"benchmark": "runtime_roofline", "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "machine": hardware.machine_info(), "threads": threads, "prompt_len": P, "decode_tokens": N,
                      "repeats": args.repeats, "bandwidth_gbs": bandwidths,
                      "bandwidth_hugepages_gbs": bandwidths_huge, "summary": summary,
                      "results": rows, "torch_vs_llamacpp": torch_rows, "seconds": time.time() - t_start},
                     default=float))
    return 0


def _cfg_file(cfg, tmp) -> str:
    path = Path(tmp) / f"{cfg.name}.json"
    cfg.save(path)
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
