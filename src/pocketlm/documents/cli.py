"""`pocketlm doc ...`: document assistance (SlimLM): run a model on a document, build DocAssist data, score.

    pocketlm doc MODEL FILE (--summarize | --suggest N | --ask "QUESTION") [--json] [--max-doc-tokens N]
    pocketlm doc data --docs DIR --out DIR --teacher-url URL --teacher-model NAME [--concurrency N]
    pocketlm doc eval --gold FILE --pred FILE [--json] [--judge-url URL --judge-model NAME]
    pocketlm doc predict MODEL --data eval.jsonl --out pred.jsonl
    pocketlm doc corpus --out DIR [--count N] [--seed S]

argparse can't mix a free positional (MODEL) with sub-commands, so `doc` takes the rest of the command
line and dispatches on its first word: data | eval | predict | corpus | run; anything else is MODEL.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pocketlm.documents.assist import DEFAULT_MAX_DOC_TOKENS, DEFAULT_MAX_NEW_TOKENS, result_of, stream_assist
from pocketlm.documents.builder import build
from pocketlm.documents.docset import MAX_TOKENS, MIN_TOKENS, offline_documents, write_documents
from pocketlm.documents.loaders import load_document
from pocketlm.documents.metrics import read_records, score
from pocketlm.documents.predict import predict_records
from pocketlm.documents.teacher import TEACHER_MODES, TeacherConfig, make_client, make_judge
from pocketlm.cli_forms import Parser, register_forms
from pocketlm.errors import UserError
from pocketlm.model.checkpoint import load_tokenizer
from pocketlm.runtime.engine import GenerationResult, load_runtime
from pocketlm.utils import atomic_write_text, check_output, print_json

USAGE = """\
pocketlm doc MODEL FILE (--summarize | --suggest N | --ask "Q") [--json] [--max-doc-tokens N]   assist on a document
pocketlm doc data --docs DIR --out DIR --teacher-url URL --teacher-model NAME [--concurrency N] DocAssist data
pocketlm doc eval --gold FILE --pred FILE [--json]            BLEU, ROUGE, STS, intent accuracy, diversity
pocketlm doc predict MODEL --data eval.jsonl --out pred.jsonl  run a model over DocAssist gold records
pocketlm doc corpus --out DIR [--count N] [--seed S]           an offline document set (340-1000 tokens)"""


def register(subparsers) -> None:
    register_forms(subparsers, "doc",
                   help="document assistance (SlimLM): summarize, suggest questions, answer; data, eval",
                   description="Document assistance in SlimLM's DocAssist format.", usage=USAGE,
                   forms={"data": (_data_parser, _cmd_data), "eval": (_eval_parser, _cmd_eval),
                          "predict": (_predict_parser, _cmd_predict), "corpus": (_corpus_parser, _cmd_corpus),
                          "run": (_run_parser, _cmd_run)})


def _add_model_args(p) -> None:
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "llamacpp"],
                   help="auto: .gguf → llama.cpp, checkpoint dir → PyTorch")
    p.add_argument("--max-doc-tokens", type=int, default=DEFAULT_MAX_DOC_TOKENS,
                   help=f"longer documents are truncated, with a notice (default {DEFAULT_MAX_DOC_TOKENS}, SlimLM's)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"answer length limit (default {DEFAULT_MAX_NEW_TOKENS})")


def _load_model(args):
    backend = args.backend
    if backend == "auto":
        backend = "llamacpp" if str(args.model).endswith(".gguf") or Path(args.model).is_file() else "torch"
    if not (Path(args.model).exists()):
        raise UserError(f"model not found: {args.model} (a checkpoint directory or a .gguf file)")
    return load_runtime(args.model, backend=backend, n_ctx=None if backend == "llamacpp" else 4096)


# ----------------------------------------------------------------------------- run

def _run_parser():
    p = Parser(prog="pocketlm doc",
               description="Summarize a document, suggest questions about it, or answer a question on it, in "
                           "SlimLM's format (<intent>: ... <response>...</response>). On a terminal the answer "
                           "streams and ends with TTFT, prefill tok/s and decode tok/s. Documents: .txt .md "
                           ".html .pdf .docx.")
    p.add_argument("model", help="checkpoint dir (PyTorch) or .gguf file (llama.cpp)")
    p.add_argument("file", help="the document")
    task = p.add_mutually_exclusive_group(required=True)
    task.add_argument("--summarize", action="store_true", help="summarize the document")
    task.add_argument("--suggest", type=int, metavar="N", help="suggest N questions about the document")
    task.add_argument("--ask", metavar="QUESTION", help="answer a question on the document")
    p.add_argument("--json", action="store_true", help="print {intent, response, ttft_s, prefill_tok_s, "
                                                        "decode_tok_s, doc_tokens, truncated}")
    _add_model_args(p)
    return p


def _cmd_run(args) -> int:
    document = load_document(args.file)
    task = "summarization" if args.summarize else "question_suggestion" if args.suggest is not None else \
        "question_answering"
    with _load_model(args) as rt:
        stream = stream_assist(rt, document, task, question=args.ask, n_questions=3 if args.suggest is None else args.suggest,
                               max_doc_tokens=args.max_doc_tokens, max_new_tokens=args.max_new_tokens)
        if stream.truncated:
            print(f"pocketlm doc: note: {args.file} has {stream.original_tokens} tokens; the model reads the first "
                  f"{stream.doc_tokens} (--max-doc-tokens {args.max_doc_tokens})", file=sys.stderr)
        live = sys.stdout.isatty() and not args.json
        for r in stream:
            if live:
                print(r.text, end="" if r.finish_reason is None else "\n", flush=True)
        result = result_of(stream)
        if args.json:
            print_json(result)
            return 0
        if not live:
            print(f"<intent>: {result['intent']}" if result["intent"] else "<intent>: (none)")
            print(result["response"])
        if result["intent"] is None:
            print("pocketlm doc: note: the answer is not in SlimLM's format (no <intent>/<response>); "
                  "shown as it is", file=sys.stderr)
        summary = GenerationResult.collect(stream.tokens, stream.last, stream.text).summary()
        print("=" * 10)
        print(f"TTFT {result['ttft_s']:.2f} s | prefill {result['prefill_tok_s']:.1f} tok/s | "
              f"decode {result['decode_tok_s']:.1f} tok/s | {summary}")
    return 0


# ----------------------------------------------------------------------------- predict

def _predict_parser():
    p = Parser(prog="pocketlm doc predict",
               description="Run a model over DocAssist gold records (eval.jsonl from `pocketlm doc data`) and "
                           "write one prediction per record, in order, ready for `pocketlm doc eval`.")
    p.add_argument("model", help="checkpoint dir (PyTorch) or .gguf file (llama.cpp)")
    p.add_argument("--data", required=True, help="gold records (eval.jsonl)")
    p.add_argument("--out", required=True, help="predictions JSONL to write")
    _add_model_args(p)
    return p


def _cmd_predict(args) -> int:
    check_output(args.out)
    gold = read_records(args.data, "gold")
    with _load_model(args) as rt:
        preds = predict_records(rt, gold, max_doc_tokens=args.max_doc_tokens, max_new_tokens=args.max_new_tokens,
                                progress=True)
    atomic_write_text(args.out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds))
    bad = sum(p["intent"] is None for p in preds)
    print(f"wrote {len(preds)} predictions to {args.out} ({bad} not in SlimLM's format)")
    return 0


# ----------------------------------------------------------------------------- eval

def _eval_parser():
    p = Parser(prog="pocketlm doc eval",
               description="Score predictions against DocAssist gold records: BLEU (sacrebleu), ROUGE-1/2/L "
                           "(rouge-score), STS (local all-MiniLM-L6-v2), intent accuracy, distinct-1/2 of "
                           "suggested questions, optionally a GEval-style 1-5 judge. One prediction line per "
                           "gold line, in order.")
    p.add_argument("--gold", required=True, help="gold records (eval.jsonl)")
    p.add_argument("--pred", required=True, help="predictions ({intent, response} or raw text under output)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible API of an LLM judge (GEval, 1-5)")
    p.add_argument("--judge-model", default=None, help="the judge's model name (with --judge-url)")
    return p


def _cmd_eval(args) -> int:
    gold = read_records(args.gold, "gold")
    preds = read_records(args.pred, "prediction")
    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise UserError("--judge-url and --judge-model go together")
        cfg = TeacherConfig(url=args.judge_url, model=args.judge_model, retries=2)
        judge = make_judge(make_client(cfg), cfg)
    res = score(gold, preds, judge=judge)
    res.update(gold=args.gold, pred=args.pred)
    if args.json:
        print_json(res)
        return 0
    cols = ["bleu", "rouge1", "rouge2", "rougeL", "sts", "intent_accuracy"] + (["geval"] if judge else [])
    print(f"{'task':<22}{'n':>5}" + "".join(f"{c:>17}" for c in cols) + f"{'distinct-1/2':>16}")
    for task, row in res["tasks"].items():
        div = f"{row['distinct_1']:.3f}/{row['distinct_2']:.3f}" if "distinct_1" in row else "-"
        print(f"{task:<22}{row['n']:>5}" + "".join(f"{row[c]:>17.4f}" for c in cols) + f"{div:>16}")
    print(f"intent accuracy {res['intent_accuracy']:.4f} | in SlimLM's format {res['parse_rate']:.4f} | "
          f"three-task average {res['average']:.4f} | STS model {res['sts_model']}")
    return 0


# ----------------------------------------------------------------------------- data

def _data_parser():
    p = Parser(prog="pocketlm doc data",
               description="SlimLM's DocAssist builder: annotate every document of --docs with an OpenAI-"
                           "compatible teacher (key from OPENAI_API_KEY when set) and write annotations.jsonl "
                           "(append-only journal: rerun to resume), sft.jsonl (chat records for `pocketlm "
                           "finetune`) and eval.jsonl (gold records for `pocketlm doc eval`) to --out.")
    p.add_argument("--docs", required=True, help="directory of documents (.txt .md .html .pdf .docx)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--teacher-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--teacher-model", required=True, help="the teacher's model name")
    p.add_argument("--concurrency", type=int, default=4, help="documents in flight (default 4)")
    p.add_argument("--teacher-mode", default="json", choices=TEACHER_MODES,
                   help="json: one call per document returning summary, questions and QA pairs as JSON "
                        "(SlimLM's); per-task: a plain prompt per task, for small teachers (default json)")
    p.add_argument("--retries", type=int, default=3, help="extra attempts per call, with backoff (default 3)")
    p.add_argument("--max-doc-tokens", type=int, default=DEFAULT_MAX_DOC_TOKENS,
                   help=f"documents are truncated to this (default {DEFAULT_MAX_DOC_TOKENS})")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer (or checkpoint) dir to count tokens with (default: ~1.42 tokens per word)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    return p


def _cmd_data(args) -> int:
    check_output(args.out, directory=True)
    if args.retries < 0:
        raise UserError("--retries must be >= 0")
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    cfg = TeacherConfig(url=args.teacher_url, model=args.teacher_model, mode=args.teacher_mode, retries=args.retries)
    res = build(args.docs, args.out, cfg, concurrency=args.concurrency, max_doc_tokens=args.max_doc_tokens,
                tokenizer=tokenizer, progress=not args.json)
    if args.json:
        print_json(res)
    else:
        print(f"{res['annotated']} documents annotated, {res['already_done']} already done, {res['errors']} "
              f"failed ({res['calls']} teacher calls, {res['seconds']:.0f} s) -> {res['sft_records']} chat records "
              f"in {os.path.join(args.out, 'sft.jsonl')}, {res['eval_records']} gold records in eval.jsonl")
        for d in res["failed_documents"][:10]:
            print(f"  failed: {d} (see annotations.jsonl; rerun to retry)")
    return 1 if res["failed_documents"] and not res["annotated"] and not res["already_done"] else 0


# ----------------------------------------------------------------------------- corpus

def _corpus_parser():
    p = Parser(prog="pocketlm doc corpus",
               description="Write an offline document set built from pocketlm's built-in corpus (no network): "
                           f"{MIN_TOKENS}-{MAX_TOKENS}-token .txt documents, deterministic in --seed.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--count", type=int, default=200, help="documents (default 200)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (a different seed: different documents)")
    p.add_argument("--min-tokens", type=int, default=MIN_TOKENS, help=f"default {MIN_TOKENS}")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"default {MAX_TOKENS}")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir to count tokens with (default: estimate)")
    return p


def _cmd_corpus(args) -> int:
    check_output(args.out, directory=True)
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    docs = offline_documents(args.count, args.seed, args.min_tokens, args.max_tokens, tokenizer)
    paths = write_documents(docs, args.out)
    print(f"wrote {len(paths)} documents to {args.out}")
    return 0
