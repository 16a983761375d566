"""`pocketlm search` and `pocketlm latency fit / predict / calibrate`: the search stage's verbs, their
handlers and the summaries they print."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.model import costs
from pocketlm.model.config import ModelConfig, read_structured_file
from pocketlm.search.profiles import (DeviceProfile, builtin_profiles, calibrate, config_from_spec, fit_profile,
                                      parse_model_configs)
from pocketlm.search.report import shape_text
from pocketlm.search.search import run_search
from pocketlm.search.settings import BACKENDS, OBJECTIVES, SUBSTITUTE, SearchSettings
from pocketlm.search.space import BUDGET_KINDS, format_count, parse_budget
from pocketlm.utils import check_output, print_json


def register(subparsers) -> None:
    _register_latency(subparsers)
    _register_search(subparsers)


def _fresh(out: Path) -> None:
    res = out / "results.jsonl"
    if res.exists():  # never lose work: set the old cache aside
        res.rename(out / f"results.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")


def _register_search(subparsers) -> None:
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
    check_output(out, directory=True)
    if args.backend == "llamacpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise UserError("the llamacpp backend needs llama-cpp-python (pip install 'pocketlm[runtime]'), "
                            "or use --backend torch") from None
    if args.fresh:
        _fresh(out)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    # `kill` behaves like Ctrl-C (pocketlm.cli.main turns SIGTERM into an interrupt): exported GGUFs are
    # cleaned up, the measurement cache is kept
    summary = run_search(settings, progress=not args.no_progress, log=log)
    if args.json:
        print_json(summary)
    else:
        print_summary(summary)
    return 0


def print_summary(sm: dict) -> None:
    _, label, _, _ = OBJECTIVES[sm["objective"]]
    cfg = ModelConfig.from_dict(sm["winner_config"])
    wm = sm["winner_metrics"]
    print()
    tied = "tied" if cfg.tie_embeddings else "untied"
    print(f"winner: {sm['winner']} — {shape_text(cfg)}, {tied} embeddings, vocab {cfg.vocab_size:,}, "
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
    if sm["best_preset_same_vocab"]:
        sv = sm["speedups_same_vocab"]
        print(f"architecture only, against {sm['best_preset_same_vocab']} (vocab {sm['vocab_size']:,}): "
              f"{sv[sm['objective']]:.2f}x on {label} (decode {sv['decode']:.2f}x, prefill {sv['prefill']:.2f}x); "
              "the headline speedup is the one against the published preset")
    if not sm["best_preset"] and not sm["best_preset_same_vocab"]:
        print("no published preset within ±10% of the budget to compare with")
    out = Path(sm["out"])
    print(f"wrote {out / 'config.json'} (ready for `pocketlm init` / `pocketlm pretrain`), report.md, "
          f"pareto.png, results.jsonl in {sm['runtime_s']:.0f} s")
    recipe = "phonelm-1.5b" if sm["budget"] >= 1e9 else "phonelm-0.5b"
    print(f"next: pocketlm pretrain {recipe} --model {out / 'config.json'}   (PhoneLM's recipe, this shape)")


def _register_latency(sub) -> None:
    p = sub.add_parser("latency", help="fit, use and calibrate the analytic latency model",
                       description="Analytic latency model (fixed + per-layer + bytes/bandwidth + FLOPs/compute) "
                                   "fitted to `pocketlm bench` results or llama-bench output; predicts TTFT and "
                                   "decode speed of any config on a device profile.")
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION")

    f = lsub.add_parser("fit", help="fit a device profile to `pocketlm bench` results.json files")
    f.add_argument("results", nargs="+", help="results.json file(s) written by `pocketlm bench`")
    f.add_argument("--out", required=True, help="profile YAML to write")
    f.add_argument("--name", default=None, help="profile name (default: the output file's stem)")
    f.add_argument("--compute", type=float, default=None, help="peak compute in GFLOP/s to record in the profile")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_fit)

    pr = lsub.add_parser("predict", help="predict TTFT / decode speed of configs on a device profile")
    pr.add_argument("models", nargs="+", metavar="CONFIG|PRESET|GGUF")
    pr.add_argument("--profile", required=True, help="profile YAML or built-in name (" +
                    ", ".join(builtin_profiles()) + ")")
    pr.add_argument("--quant", default="q4_0", help="precision (f32, f16, q8_0, q4_0; default q4_0)")
    pr.add_argument("--prompt-len", type=int, default=512)
    pr.add_argument("--decode-len", type=int, default=128)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    c = lsub.add_parser("calibrate", help="make a device profile from `llama-bench -o json` output")
    c.add_argument("llama_bench_json")
    c.add_argument("--model-config", action="append", default=None, metavar="SPEC",
                   help="config of the benchmarked model(s): a preset/config/GGUF for all records, "
                        "FILENAME=SPEC per model_filename, or a YAML/JSON mapping file; repeatable")
    c.add_argument("--base", default=None, help="profile (file or built-in name) whose bandwidth/compute to keep")
    c.add_argument("--quant", default=None, help="treat every record as this precision (e.g. for Q4_K models)")
    c.add_argument("--name", default=None)
    c.add_argument("--out", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_calibrate)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _load_results(paths: list[str]) -> tuple[list[dict], dict]:
    records, meta = [], {}
    for path in paths:
        data = read_structured_file(path)
        recs = data.get("records") if isinstance(data, dict) else data
        if not isinstance(recs, list):
            raise UserError(f"{path}: expected a `pocketlm bench` results.json with a 'records' list")
        records += recs
        if isinstance(data, dict) and not meta:
            meta = data
    return records, meta


def cmd_fit(args: argparse.Namespace) -> int:
    check_output(args.out)
    records, meta = _load_results(args.results)
    machine = meta.get("machine") or {}
    prof = fit_profile(records, args.name or Path(args.out).stem, bandwidth_gbs=meta.get("bandwidth_gbs"),
                       compute_gflops=args.compute or meta.get("compute_gflops"), threads=meta.get("threads"),
                       description=f"fitted to pocketlm bench on {machine.get('cpu', 'this machine')}",
                       sources=[str(Path(r).resolve()) for r in args.results])
    return _save_and_show_profile(prof, args)


def _save_and_show_profile(prof: DeviceProfile, args: argparse.Namespace) -> int:
    """Write a fitted/calibrated profile to --out and show its fit (or the profile as --json)."""
    prof.save(args.out)
    if args.json:
        print_json(prof.to_dict())
    else:
        for key, info in prof.fit.items():
            print(f"{key:<16} {info['kind']:<40} n={info['measurements']:<4} "
                  f"train MAPE {100 * info['train_mape']:.1f}%")
        print(f"wrote {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    prof = DeviceProfile.load(args.profile)
    model = prof.latency_model()
    rows = []
    for spec in args.models:
        cfg = config_from_spec(spec)
        r = model.predict(cfg, args.quant, args.prompt_len, args.decode_len)
        rows.append({"model": spec, "params": costs.param_groups(cfg)["total"], "quant": args.quant,
                     "prompt_len": args.prompt_len, "decode_len": args.decode_len, **r})
    rows.sort(key=lambda r: r["e2e_s"])
    if args.json:
        print_json({"profile": prof.name, "calibrated": bool(prof.coefficients or prof.measurements),
                    "predictions": rows})
        return 0
    kind = "fitted" if prof.coefficients else ("calibrated on listed measurements" if prof.measurements
                                               else "ROOFLINE BOUND (uncalibrated: optimistic)")
    print(f"device {prof.name} ({kind}), {args.quant}, prompt {args.prompt_len}, decode {args.decode_len} tokens")
    print(f"{'model':<24} {'params':>8} {'TTFT s':>8} {'prefill tok/s':>13} {'decode tok/s':>12} {'e2e s':>8}")
    for r in rows:
        print(f"{r['model']:<24} {r['params'] / 1e6:>7.1f}M {r['ttft_s']:>8.3f} {r['prefill_tok_s']:>13.1f} "
              f"{r['decode_tok_s']:>12.1f} {r['e2e_s']:>8.2f}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    check_output(args.out)
    data = read_structured_file(args.llama_bench_json)
    configs = parse_model_configs(args.model_config, data)
    base = DeviceProfile.load(args.base) if args.base else None
    prof, notes = calibrate(data, configs, args.name or Path(args.out).stem, base=base, quant=args.quant)
    for n in notes:
        print(f"note: {n}")
    return _save_and_show_profile(prof, args)
