"""Does the analytic latency model predict configs it has never seen?

Measures a set of diverse random-weight configs (20M-450M parameters; width, depth, heads, GQA,
MLP ratio, vocabulary, tied/untied, q/k/v bias) on pocketlm's llama.cpp backend at Q4_0 and a few
prompt lengths, fits `pocketlm.latency.LatencyModel` on some configs and reports the median absolute
percentage error on the HELD-OUT configs for TTFT (prefill) and decode time per token.
Target: <= 10% for both. The alternative a user would otherwise reach for, the bandwidth/compute
roofline with this machine's measured peaks, is scored on the same held-out points.

    flock /tmp/pocketlm-bench.lock .venv/bin/python benchmarks/latency_model.py [--profile-out FILE.yaml]

Prints a table, then ONE JSON line. About 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path


from pocketlm import hardware
from pocketlm.bench import run_bench
from pocketlm.config import ModelConfig
from pocketlm.latency import DeviceProfile, LatencyModel, fit_profile


def C(name, h, layers, heads, kv, ff, vocab, tied=True, bias=False, head_dim=None) -> ModelConfig:
    return ModelConfig(name=name, vocab_size=vocab, hidden_size=h, num_layers=layers, num_heads=heads,
                       num_kv_heads=kv, head_dim=head_dim, intermediate_size=ff, tie_embeddings=tied,
                       qkv_bias=bias, max_position_embeddings=2048)


# (config, held out?) — held-out configs sit inside the training range on each axis but are new shapes
CONFIGS = [
    (C("w256-l6", 256, 6, 4, 2, 768, 8192), False),
    (C("w384-l12", 384, 12, 6, 2, 1024, 32000), False),
    (C("w512-l8-untied", 512, 8, 8, 8, 1536, 16384, tied=False), False),
    (C("w576-l30", 576, 30, 9, 3, 1536, 49152), False),
    (C("w768-l16-bias", 768, 16, 12, 4, 2048, 32000, bias=True), False),
    (C("w1024-l8", 1024, 8, 16, 4, 2816, 49152), False),
    (C("w896-l24-qwen", 896, 24, 14, 2, 4864, 151936, bias=True), False),
    (C("w1536-l6", 1536, 6, 12, 4, 4096, 32000), False),
    (C("w1280-l14-d80", 1280, 14, 16, 8, 3456, 65536, head_dim=80), False),
    # held out
    (C("w320-l10", 320, 10, 5, 5, 896, 16384), True),
    (C("w640-l20", 640, 20, 10, 2, 1728, 49152), True),
    (C("w960-l12-untied", 960, 12, 15, 5, 2560, 32000, tied=False), True),
    (C("w1152-l10-bias", 1152, 10, 18, 6, 3072, 100000, bias=True), True),
    (C("w768-l28", 768, 28, 12, 3, 2048, 49152), True),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contexts", default="64,256,768")
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quant", default="q4_0")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile-out", default=None, help="also write a device profile fitted on ALL configs")
    ap.add_argument("--results-out", default=None, help="also write the raw measurements (results.json format)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still remove the temp GGUF files
    t0 = time.time()
    threads = args.threads or hardware.default_threads()
    contexts = [int(c) for c in args.contexts.split(",")]
    bw = hardware.measure_bandwidth(threads, size_mb=1024, passes=5)
    gflops = hardware.measure_matmul(threads)

    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for cfg, _ in CONFIGS:
            path = Path(tmp) / f"{cfg.name}.json"
            cfg.save(path)
            specs.append(str(path))
        results = run_bench(specs, backend="llamacpp", quants=[args.quant], contexts=contexts,
                            decode_tokens=args.decode_tokens, repeats=args.repeats, warmup=1, bandwidth=bw,
                            threads=threads, log=lambda *a, **k: None)
    records = results["records"]
    held_names = {cfg.name for cfg, held in CONFIGS if held}
    train = [r for r in records if r["model"] not in held_names]
    test = [r for r in records if r["model"] in held_names]

    model = LatencyModel.fit(train)
    err = model.evaluate(test)
    roof = DeviceProfile("roofline", bandwidth_gbs=bw, compute_gflops=gflops).latency_model()
    roof_err = roof.evaluate(test)

    # ------------------------------------------------------------------ report
    print(f"llama.cpp {args.quant}, {threads} threads, contexts {contexts}, decode {args.decode_tokens} tokens, "
          f"median of {args.repeats}; fitted on {len(CONFIGS) - len(held_names)} configs, "
          f"tested on {len(held_names)} held out\n")
    head = f"{'held-out config':<18} {'params':>7} {'ctx':>5} {'TTFT s':>8} {'pred':>8} {'err':>6} {'dec tok/s':>9} {'pred':>7} {'err':>6}"
    print(head)
    print("-" * len(head))
    for r in test:
        p = model.predict(r["config"], args.quant, r["prompt_len"], r["decode_len"])
        print(f"{r['model']:<18} {r['params'] / 1e6:>6.0f}M {r['prompt_len']:>5} {r['ttft_s']:>8.3f} {p['ttft_s']:>8.3f} "
              f"{100 * (p['ttft_s'] / r['ttft_s'] - 1):>+5.0f}% {r['decode_tok_s']:>9.1f} {p['decode_tok_s']:>7.1f} "
              f"{100 * (p['decode_tok_s'] / r['decode_tok_s'] - 1):>+5.0f}%")
    c = model.coefficients[args.quant]
    print(f"\nfitted: decode {1e3 * c['decode']['fixed_s']:.2f} ms/token + {1e6 * c['decode']['per_layer_s']:.0f} us/layer, "
          f"effective bandwidth {_inv(c['decode']['s_per_byte'])} GB/s, compute {_inv(c['decode']['s_per_flop'])} GFLOP/s; "
          f"prefill compute {_inv(c['prefill']['s_per_flop'])} GFLOP/s (measured peaks: {bw:.1f} GB/s, "
          f"{gflops:.0f} GFLOP/s fp32 GEMM)")
    print(f"\n{'held-out median |error|':<28} {'latency model':>13} {'roofline only':>14}")
    for phase, label in (("prefill", "TTFT (prefill)"), ("decode", "decode s/token")):
        print(f"{label:<28} {100 * err[phase]['median_ape']:>12.1f}% {100 * roof_err[phase]['median_ape']:>13.1f}%")
    ok = err["prefill"]["median_ape"] <= 0.10 and err["decode"]["median_ape"] <= 0.10
    print(f"target <= 10% on both: {'PASS' if ok else 'FAIL'}; {time.time() - t0:.0f} s total")

    if args.results_out:
        Path(args.results_out).write_text(json.dumps(results, indent=1, default=str) + "\n")
    if args.profile_out:
        prof = fit_profile(records, Path(args.profile_out).stem, bandwidth_gbs=round(bw, 1),
                           compute_gflops=round(gflops, 1), threads=threads,
                           description=f"this development machine ({hardware.cpu_name()}, {threads} threads, "
                                       f"llama.cpp {args.quant}), fitted by benchmarks/latency_model.py",
                           sources=[f"benchmarks/latency_model.py, {time.strftime('%Y-%m-%d')}, "
                                    f"{len(records)} measurements of {len(CONFIGS)} configs"])
        prof.save(args.profile_out)
        print(f"wrote {args.profile_out}")
    print(json.dumps({
        "benchmark": "latency_model", "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": hardware.machine_info(),
        "threads": threads, "quant": args.quant, "contexts": contexts, "decode_tokens": args.decode_tokens,
        "repeats": args.repeats, "bandwidth_gbs": bw, "matmul_gflops_fp32": gflops,
        "train_configs": [cfg.name for cfg, held in CONFIGS if not held], "held_out_configs": sorted(held_names),
        "held_out_error": err, "roofline_only_error": roof_err, "target_median_ape": 0.10, "pass": ok,
        "coefficients": model.coefficients, "fit": model.fit_info, "seconds": time.time() - t0,
        "measurements": [{k: r[k] for k in ("model", "params", "prompt_len", "ttft_s", "decode_tok_s")} for r in records],
    }, default=float))
    return 0


def _inv(s_per_unit: float) -> str:
    return f"{1 / s_per_unit / 1e9:.0f}" if s_per_unit > 0 else "inf"


if __name__ == "__main__":
    sys.exit(main())
