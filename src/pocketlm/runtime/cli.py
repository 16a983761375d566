"""`pocketlm generate`, `pocketlm export` and `pocketlm bench`: thin consumers of the runtime stage."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.runtime import bench
from pocketlm.runtime.engine import BACKENDS, GenerationResult, load_runtime
from pocketlm.runtime.gguf import QUANTS, export_gguf, read_gguf
from pocketlm.utils import check_output, print_json


def register(subparsers) -> None:
    _register_export(subparsers)  # the order `pocketlm --help` has always listed them in
    _register_generate(subparsers)
    _register_bench(subparsers)


# ---------------------------------------------------------------------------------------------
# generate

def _register_generate(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text with the torch or llama.cpp backend",
        description="Generate from a checkpoint directory, a GGUF file, a preset or a config (random "
                    "weights). Ends with prompt tok/s, generation tok/s and peak memory.")
    p.add_argument("model", metavar="MODEL", help="checkpoint dir, .gguf file, preset name or config file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (needs a tokenizer)")
    src.add_argument("--prompt-ids", help="comma-separated prompt token ids, e.g. 1,2,3")
    p.add_argument("--backend", default="llamacpp", choices=BACKENDS, help="default llamacpp")
    p.add_argument("--quant", default="q4_0", choices=QUANTS,
                   help="GGUF weight type when exporting for llamacpp (default q4_0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="torch backend dtype")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--greedy", action="store_true", help="greedy decoding (temperature 0)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and random-weight seed)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--system", default=None, help="system message with --chat")
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    p.add_argument("--n-ctx", type=int, default=2048, help="context to allocate (capped at the model's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cli_generate)


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.replace(" ", ",").split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise UserError("--prompt-ids is empty")
    return ids


def _cli_generate(args) -> int:
    temperature = 0.0 if args.greedy else args.temperature
    prompt_ids = _parse_ids(args.prompt_ids) if args.prompt_ids is not None else None
    if prompt_ids is not None and args.chat:
        raise UserError("--chat needs --prompt TEXT")
    rt = load_runtime(args.model, backend=args.backend, quant=args.quant, threads=args.threads,
                      n_ctx=args.n_ctx, dtype=args.dtype, seed=args.seed)
    with rt:
        if prompt_ids is None:
            if not rt.has_tokenizer:
                raise UserError("this model has no tokenizer, so --prompt TEXT can't be encoded; "
                                "pass token ids with --prompt-ids 1,2,3")
            prompt_ids = rt.encode(args.prompt, chat=args.chat, system=args.system)
        stops = rt.end_of_turn_ids() if args.chat else rt.special_ids()
        stream_text = rt.has_tokenizer and not args.json
        tokens: list[int] = []
        for r in rt.stream_generate(prompt_ids, max_new_tokens=args.max_new_tokens, temperature=temperature,
                                    top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop_ids=stops):
            if r.token is not None:
                tokens.append(r.token)
            if stream_text:
                print(r.text, end="" if r.finish_reason is None else "\n", flush=True)
        result = GenerationResult.collect(tokens, r, rt.decode_text(tokens) if rt.has_tokenizer else None)
        if args.json:
            print_json({**result.__dict__, "backend": rt.backend, "quant": rt.quant, "threads": rt.threads})
            return 0
        if not stream_text:
            print(" ".join(map(str, tokens)))
        print("=" * 10)
        print(result.summary())
    return 0


# ---------------------------------------------------------------------------------------------
# export

def _register_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to GGUF for llama.cpp",
        description="Export a checkpoint directory (trained weights, tokenizer and chat template embedded), "
                    "or a preset/config (random weights written directly in the quantized layout, with a "
                    "placeholder vocabulary) to a GGUF file llama.cpp loads.")
    p.add_argument("model", metavar="MODEL", help="checkpoint directory, preset name or config file")
    p.add_argument("--format", default="gguf", choices=["gguf"], help="output format (default gguf)")
    p.add_argument("--quant", default="f16", choices=QUANTS, help="weight type (default f16)")
    p.add_argument("--output-quant", default=None, choices=QUANTS,
                   help="type of the output matrix (the token embedding when tied), as llama-quantize's "
                        "--output-tensor-type; e.g. q8_0 with --quant q4_0 (default: --quant)")
    p.add_argument("--out", required=True, help="output .gguf file")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights (preset/config)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_cli_export)


def _cli_export(args) -> int:
    check_output(args.out)
    t0 = time.perf_counter()
    out = export_gguf(args.model, args.out, quant=args.quant, tokenizer_dir=args.tokenizer, seed=args.seed,
                      progress=not args.json, output_quant=args.output_quant)
    info = read_gguf(out)
    summary = {"out": str(out), "quant": args.quant, "output_quant": args.output_quant or args.quant,
               "arch": info["arch"],
               "size_mb": round(info["size_bytes"] / 1e6, 2), "tensors": info["n_tensors"],
               "vocabulary": "placeholder" if info["placeholder_vocab"] else "tokenizer",
               "chat_template": bool(info["chat_template"]),
               "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print_json(summary)
    else:
        print(f"vocabulary: {summary['vocabulary']}, chat template: {'yes' if summary['chat_template'] else 'no'}")
    return 0


# ---------------------------------------------------------------------------------------------
# bench

def _register_bench(sub) -> None:
    p = sub.add_parser("bench", help="TTFT, prefill/decode tok/s and peak RSS vs context, against the roofline",
                       description=bench.__doc__.split("\n\n")[0] + " See `pocketlm bench --help`.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="preset, config file, checkpoint dir or GGUF file")
    p.add_argument("--backend", choices=("llamacpp", "torch"), default="llamacpp")
    p.add_argument("--quant", default=None, help="comma-separated precisions (llamacpp default f16,q8_0,q4_0; "
                   "torch default bf16); a GGUF file is timed at its own precision")
    p.add_argument("--contexts", default=",".join(map(str, bench.DEFAULT_CONTEXTS)),
                   help="comma-separated prompt lengths (default %(default)s)")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens decoded after each prompt (default 32)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per point; median reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per point (default 1)")
    p.add_argument("--bandwidth", default=None, metavar="GB/s",
                   help="memory bandwidth for the roofline; 'measure' to re-measure now "
                        "(default: measured once per host and cached in ~/.cache/pocketlm/hardware.json)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (default runs/bench/DATE-TIME)")
    p.add_argument("--json", action="store_true", help="print the results JSON instead of the table")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    contexts = bench.parse_int_list(args.contexts, "--contexts")
    quants = [q.strip() for q in args.quant.split(",") if q.strip()] if args.quant else None
    if args.quant is not None and not quants:
        raise UserError("--quant needs at least one precision")
    out_dir = Path(args.out or Path("runs") / "bench" / time.strftime("%Y%m%d-%H%M%S"))
    check_output(out_dir, directory=True)
    log = (lambda *a, **k: None) if args.json else print
    results = bench.run_bench(args.models, backend=args.backend, quants=quants, contexts=contexts,
                              decode_tokens=args.decode_tokens, repeats=args.repeats, warmup=args.warmup,
                              bandwidth=args.bandwidth, threads=args.threads, seed=args.seed, log=log)
    bench.write_outputs(results, out_dir)
    if args.json:
        print_json(results)
    else:
        print(bench.format_table(results))
        print(f"wrote {results['files']['results']} and {results['files']['plot']}")
    return 0
