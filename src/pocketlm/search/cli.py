"""`pocketlm search`: the verb's flags, its handler and the summary it prints."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig
from pocketlm.search.report import shape_text
from pocketlm.search.search import run_search
from pocketlm.search.settings import BACKENDS, OBJECTIVES, SUBSTITUTE, SearchSettings
from pocketlm.search.space import BUDGET_KINDS, format_count, parse_budget
from pocketlm.utils import print_json


def _fresh(out: Path) -> None:
    res = out / "results.jsonl"
    if res.exists():  # never lose work: set the old cache aside
        res.rename(out / f"results.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")


def register(subparsers) -> None:
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
    if args.backend == "llamacpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise UserError("the llamacpp backend needs llama-cpp-python (pip install 'pocketlm[runtime]'), "
                            "or use --backend torch") from None
    if args.fresh:
        _fresh(out)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    def _term(signum, frame):  # `kill` behaves like Ctrl-C: exported GGUFs are cleaned up, cache kept
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
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
