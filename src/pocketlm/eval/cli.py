"""`pocketlm eval MODEL --tasks LIST` and `pocketlm report RUN_DIR... --out DIR`."""

from __future__ import annotations

from pocketlm.eval.report import write_report
from pocketlm.eval.run import evaluate_model, format_table
from pocketlm.eval.tasks import BUILTIN, PHONELM_TASKS
from pocketlm.utils import check_output, print_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="capability evaluation: perplexity, intent, docassist, any lm-eval task",
        description="Evaluate a checkpoint directory (lm-eval's Hugging Face model class) or a GGUF file "
                    "(pocketlm's llama.cpp engine) on built-in offline tasks (" + ", ".join(BUILTIN)
                    + ") or any lm-eval task by name (needs its dataset from the hub; 'phonelm' = "
                    + ", ".join(PHONELM_TASKS) + ").")
    p.add_argument("model", metavar="MODEL", help="checkpoint directory or .gguf file")
    p.add_argument("--tasks", default="perplexity,intent", help="comma-separated task names (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples of each task")
    p.add_argument("--tokenizer", default=None,
                   help="for a GGUF: the checkpoint it was exported from (its tokenizer and intent.json)")
    p.add_argument("--docassist-data", default=None, metavar="FILE",
                   help="gold records for the docassist task (eval.jsonl from `pocketlm doc data`; default: "
                        "the built-in 30 held-out requests, whose teacher was SmolLM2-135M-Instruct itself)")
    p.add_argument("--out", default=None, help="also write the result JSON to this file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_eval)

    r = subparsers.add_parser(
        "report", help="report card: capability and on-device efficiency of the models in run directories",
        description="Collect eval results (eval.json / `pocketlm eval --out`), bench results (results.json "
                    "of `pocketlm bench`) and search results (pareto.png) found under each RUN_DIR into "
                    "report.md plus PNGs: per model parameters, capability scores, TTFT / prefill / decode "
                    "tok/s per context length, peak memory, GGUF size; capability vs decode tok/s.")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="pipeline output, or any directory of results")
    r.add_argument("--out", required=True, help="output directory (report.md, *.png)")
    r.add_argument("--json", action="store_true", help="print the report's data as JSON")
    r.set_defaults(func=_cmd_report)


def _cmd_eval(args) -> int:
    if args.out:
        check_output(args.out)
    log = (lambda *a, **k: None) if args.json else print
    result = evaluate_model(args.model, args.tasks, limit=args.limit, tokenizer=args.tokenizer,
                            out=args.out, docassist_data=args.docassist_data, log=log)
    if args.json:
        print_json(result)
    else:
        print(format_table(result))
    return 0


def _cmd_report(args) -> int:
    check_output(args.out, directory=True)
    data = write_report(args.runs, args.out)
    if args.json:
        print_json(data)
    else:
        print(f"wrote {data['files']['report']}" + "".join(f" and {f}" for f in data["files"]["plots"]))
    return 0
