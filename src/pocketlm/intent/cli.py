"""`pocketlm intent ...`: run a model on a request, evaluate predictions, make data.

    pocketlm intent MODEL "wake me up at 7:30 tomorrow" [--json] [--backend torch|llamacpp]
    pocketlm intent eval --gold test.jsonl --pred pred.jsonl [--json]
    pocketlm intent data --out DIR [--train N] [--test N] [--seed S]
    pocketlm intent predict MODEL --data test.jsonl --out pred.jsonl

argparse can't mix a free positional (MODEL) with sub-commands, so `intent` takes the rest of the
command line and dispatches on its first word: eval | data | predict | run, anything else is MODEL.
"""

from __future__ import annotations

import json
import os
import sys

from pocketlm.cli_forms import Parser, register_forms
from pocketlm.errors import UserError
from pocketlm.intent.android import to_adb
from pocketlm.intent.infer import load_runner, predict, run_query
from pocketlm.intent.metrics import evaluate, get_matcher, load_predictions
from pocketlm.intent.prompt import format_answer, to_sft_records
from pocketlm.intent.specs import load_droidcall, load_specs, write_droidcall, write_jsonl
from pocketlm.intent.synth import synthesize
from pocketlm.utils import check_output, print_json, require_nonempty

USAGE = """\
pocketlm intent MODEL "TEXT" [--json] [--backend auto|torch|llamacpp]   turn a request into Android intent call(s)
pocketlm intent eval --gold FILE --pred FILE [--json]                 DroidCall accuracy / soft accuracy
pocketlm intent data --out DIR [--train N] [--test N] [--seed S]      synthesize DroidCall-format data
pocketlm intent predict MODEL --data FILE --out FILE                  run a model over a DroidCall file"""

def register(subparsers) -> None:
    register_forms(subparsers, "intent", help="Android intent calling (DroidCall): run, eval, data, predict",
                   description="Android intent invocation in DroidCall's format.", usage=USAGE,
                   forms={"eval": (_eval_parser, _cmd_eval), "data": (_data_parser, _cmd_data),
                          "predict": (_predict_parser, _cmd_predict), "run": (_run_parser, _cmd_run)})


def _eval_parser():
    p = Parser(prog="pocketlm intent eval",
               description="Score predictions with DroidCall's metrics (accuracy = every call and argument "
                           "right; soft_accuracy = mean share of right arguments). Both files are DroidCall "
                           "JSONL ({\"query\", \"answers\": [{\"id\", \"name\", \"arguments\"}]}), one prediction "
                           "per gold line in the same order (blank lines are skipped in both). A prediction "
                           "line may instead carry raw model text under \"output\". Malformed prediction lines, "
                           "unknown functions and unparsable output score 0 with a reason. Different numbers "
                           "of lines are an error (exit 2): the files would be misaligned.")
    p.add_argument("--gold", required=True, help="gold DroidCall JSONL")
    p.add_argument("--pred", required=True, help="predictions, DroidCall JSONL in gold order")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--matcher", default="auto", choices=["auto", "embedding", "lexical"],
                   help="free-text argument matcher (auto: local embedding model if installed, else lexical)")
    p.add_argument("--threshold", type=float, default=None, help="semantic similarity threshold (default 0.85)")
    p.add_argument("--specs", default=None, help="function specs api.jsonl (default: packaged DroidCall specs)")
    p.add_argument("--per-sample", default=None, metavar="FILE", help="write per-sample scores and reasons (JSONL)")
    p.add_argument("--show", type=int, default=5, help="failed samples to list in the text output")
    return p


def _cmd_eval(args) -> int:
    if args.per_sample:
        check_output(args.per_sample)
    specs = load_specs(args.specs)
    gold = require_nonempty(load_droidcall(args.gold), args.gold, "samples")
    preds = load_predictions(args.pred)
    if len(preds) != len(gold):
        raise UserError(f"{args.pred} has {len(preds)} predictions but {args.gold} has {len(gold)} samples; "
                        "write one prediction line per gold line, in order")
    matcher = get_matcher(args.matcher, args.threshold)
    res = evaluate(gold, preds, specs, matcher)
    # a fallback inside the embedding matcher (load failure) changes its name after scoring
    res["matcher"] = getattr(matcher, "name", res["matcher"])
    if args.per_sample:
        write_jsonl(res["per_sample"], args.per_sample)
    failures = [s for s in res["per_sample"] if not s["correct"]]
    summary = {k: res[k] for k in ("accuracy", "soft_accuracy", "n", "matcher", "bad_lines", "bad_predictions",
                                   "bad_gold")}
    summary.update(gold=args.gold, pred=args.pred, failed=len(failures))
    if args.json:
        summary["failures"] = [{k: s[k] for k in ("index", "gold_line", "score", "reasons")} for s in failures]
        print_json(summary)
        return 0
    print(f"accuracy       {res['accuracy']:.4f}  ({res['n'] - len(failures)}/{res['n']} samples fully right)")
    print(f"soft_accuracy  {res['soft_accuracy']:.4f}  (mean share of right arguments)")
    print(f"matcher        {summary['matcher']}")
    print(f"bad lines      {res['bad_lines']}")
    for r in (res["bad_gold"] + res["bad_predictions"])[:args.show]:
        print(f"  {r}")
    if failures and args.show:
        print(f"first {min(args.show, len(failures))} of {len(failures)} failures:")
        for s in failures[:args.show]:
            print(f"  [{s['index']}] score {s['score']:.2f}  {s['query'][:70]!r}")
            for r in s["reasons"][:4]:
                print(f"      - {r}")
    return 0


# ----------------------------------------------------------------------------- data

def _data_parser():
    p = Parser(prog="pocketlm intent data",
               description="Write synthesized DroidCall-format data: train.jsonl, test.jsonl (test phrasings "
                           "and free-text values differ from train), and sft_train.jsonl / sft_test.jsonl chat "
                           "records in the code_short format for `pocketlm finetune`.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--train", type=int, default=2000, help="training samples (default 2000)")
    p.add_argument("--test", type=int, default=200, help="test samples (default 200, like DroidCall)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", type=int, default=4, help="functions listed per prompt (default 4)")
    p.add_argument("--doc-style", default="full", choices=["full", "brief"], help="function doc layout in prompts")
    p.add_argument("--multi-fraction", type=float, default=0.3, help="share of two-call requests (default 0.3)")
    p.add_argument("--json", action="store_true")
    return p


def _cmd_data(args) -> int:
    if args.train < 0 or args.test < 0:
        raise UserError("--train and --test must be >= 0")
    if not 0 <= args.multi_fraction <= 1:
        raise UserError("--multi-fraction must be in [0, 1]")
    if args.candidates < 1:
        raise UserError("--candidates must be >= 1")
    check_output(args.out, directory=True)
    specs = load_specs()
    train = synthesize(args.train, args.seed, "train", args.multi_fraction)
    test = synthesize(args.test, args.seed, "test", args.multi_fraction)
    os.makedirs(args.out, exist_ok=True)
    files = {
        "train": os.path.join(args.out, "train.jsonl"), "test": os.path.join(args.out, "test.jsonl"),
        "sft_train": os.path.join(args.out, "sft_train.jsonl"), "sft_test": os.path.join(args.out, "sft_test.jsonl"),
    }
    write_droidcall(train, files["train"])
    write_droidcall(test, files["test"])
    write_jsonl(to_sft_records(train, specs, args.seed, args.candidates, args.doc_style), files["sft_train"])
    write_jsonl(to_sft_records(test, specs, args.seed + 1, args.candidates, args.doc_style), files["sft_test"])
    info = {"out": args.out, "train": len(train), "test": len(test), "seed": args.seed,
            "multi_call_train": sum(len(s.answers) > 1 for s in train),
            "nested_train": sum(any("#" in json.dumps(c["arguments"]) for c in s.answers) for s in train),
            "doc_style": args.doc_style, "files": files}
    if args.json:
        print_json(info)
    else:
        print(f"wrote {len(train)} train / {len(test)} test samples "
              f"({info['multi_call_train']} multi-call, {info['nested_train']} nested in train) to {args.out}")
        for f in files.values():
            print(f"  {f}")
    return 0


# ----------------------------------------------------------------------------- run / predict

def _add_model_args(p) -> None:
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "llamacpp"],
                   help="auto: .gguf → llama.cpp, checkpoint dir → PyTorch")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir for a GGUF model (default: our ChatML template)")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--candidates", type=int, default=None,
                   help="functions listed in the prompt (default: the fine-tune's, from intent.json, else 4)")
    p.add_argument("--doc-style", default=None, choices=["full", "brief"],
                   help="function doc layout; must match fine-tuning (default: the checkpoint's intent.json, else full)")
    p.add_argument("--unconstrained", action="store_true",
                   help="plain greedy decoding (default: only valid calls of the candidate functions, "
                        "copied values spans of the request)")


def _prompt_settings(args, runner) -> None:
    """Fill --candidates/--doc-style from the checkpoint's intent.json when not given."""
    if args.candidates is None:
        args.candidates = int(runner.meta.get("candidates", 4))
    if args.doc_style is None:
        args.doc_style = runner.meta.get("doc_style", "full")


def _run_parser():
    p = Parser(prog="pocketlm intent",
               description="Turn a request into DroidCall function call(s) and the equivalent `adb shell` "
                           "command(s). Candidate functions come from a lexical retriever over the specs.")
    p.add_argument("model", help="checkpoint dir (or a .gguf file with --backend llamacpp)")
    p.add_argument("text", nargs="+", help="the request, e.g. \"wake me up at 7:30\"")
    p.add_argument("--functions", default=None,
                   help="comma-separated function names to offer instead of retrieving them")
    p.add_argument("--json", action="store_true")
    _add_model_args(p)
    return p


def _cmd_run(args) -> int:
    specs = load_specs()
    text = " ".join(args.text).strip()
    if not text:
        raise UserError("the request text is empty")
    candidates = None
    if args.functions:
        names = [n.strip() for n in args.functions.split(",") if n.strip()]
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise UserError(f"unknown function(s) {', '.join(unknown)}; known: {', '.join(sorted(specs))}")
        candidates = [specs[n] for n in names]
    runner = load_runner(args.model, args.backend, args.tokenizer)
    _prompt_settings(args, runner)
    r = run_query(runner, text, specs, candidates, args.candidates, args.max_new_tokens, args.doc_style,
                  not args.unconstrained)
    r["adb"] = [to_adb(c, specs.get(c["name"])) for c in r["calls"]]
    r["backend"] = runner.backend
    r["tokens_per_s"] = round(runner.tokens_generated / runner.seconds, 1) if runner.seconds else None
    if args.json:
        print_json(r)
    else:
        print(f"candidates: {', '.join(r['candidates'])}")
        if r["error"]:
            print(f"could not read a call from the model output: {r['error']}")
            print(f"model output: {r['output']!r}")
        else:
            print(format_answer(r["calls"]))
            print()
            print("\n".join(a for a in r["adb"] if a))
    if r["error"]:
        print(f"pocketlm intent: {r['error']}", file=sys.stderr)
        return 1
    return 0


def _predict_parser():
    p = Parser(prog="pocketlm intent predict",
               description="Run a model over a DroidCall JSONL file and write predictions (DroidCall format "
                           "plus the raw output) in the same order, ready for `pocketlm intent eval`.")
    p.add_argument("model")
    p.add_argument("--data", required=True, help="gold DroidCall JSONL (queries)")
    p.add_argument("--out", required=True, help="predictions JSONL to write")
    p.add_argument("--retrieve", action="store_true",
                   help="offer retrieved functions instead of gold + random distractors (DroidCall's protocol)")
    p.add_argument("--seed", type=int, default=0, help="distractor sampling seed")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    _add_model_args(p)
    return p


def _cmd_predict(args) -> int:
    check_output(args.out)
    specs = load_specs()
    samples = require_nonempty(load_droidcall(args.data), args.data, "samples")[: args.limit]
    runner = load_runner(args.model, args.backend, args.tokenizer)
    _prompt_settings(args, runner)
    preds = predict(runner, samples, specs, args.seed, args.candidates,
                    "retrieve" if args.retrieve else "gold", args.max_new_tokens, args.doc_style,
                    constrain=not args.unconstrained)
    write_jsonl(preds, args.out)
    bad = sum(p["error"] is not None for p in preds)
    speed = f", {runner.tokens_generated / runner.seconds:.1f} tok/s" if runner.seconds else ""
    print(f"wrote {len(preds)} predictions to {args.out} ({bad} unparsable{speed})")
    return 0
