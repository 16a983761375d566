"""DocAssist (SlimLM) on CPU: the zero-shot SmolLM2-135M-Instruct base vs its docassist-smollm2 LoRA fine-tune.

    flock /tmp/pocketlm-heavy.lock .venv/bin/python benchmarks/docassist.py [--out DIR] [--quick]

Stages, all offline:
1. the base: `pocketlm import smollm2-135m-instruct` (or --base DIR);
2. documents: the package's offline document set (`pocketlm.documents.docset`), train and held-out splits
   from different corpus seeds, 340-600 tokens by default (--max-tokens up to SlimLM's 1000);
3. teacher data: `pocketlm doc data` against a real OpenAI-compatible server on loopback (llama_cpp.server
   serving the built-in SmolLM2 GGUF, i.e. the imported base itself) in per-task mode: the base answers
   each task separately with plain prompts. The fine-tune therefore learns SlimLM's format and task routing,
   not better answers; --teacher-url/--teacher-model point the same builder at a stronger teacher;
4. `pocketlm finetune docassist-smollm2` on the training split's chat records;
5. both models answer every held-out request (SlimLM's prompt, greedy, torch backend) and are scored with
   `pocketlm doc eval`'s metrics: BLEU, ROUGE-1/2/L, STS (all-MiniLM-L6-v2), intent accuracy, distinct-1/2.

Targets (issue 16): intent accuracy >= 99% after fine-tuning, no metric worse than the zero-shot base, <= 40
minutes of CPU (process + children CPU time; the machine's other load makes wall time longer). Prints a
table with PASS/FAIL, writes a bar chart (docassist.png) and ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pocketlm.documents.builder import build, read_journal
from pocketlm.documents.docset import split, write_documents
from pocketlm.documents.metrics import read_records, score
from pocketlm.documents.predict import predict_records
from pocketlm.documents.prompt import TASKS
from pocketlm.documents.teacher import TeacherConfig
from pocketlm.intent.metrics import get_matcher
from pocketlm.model.checkpoint import load_tokenizer
from pocketlm.model.importer import base_path, import_model
from pocketlm.runtime.engine import load_runtime
from pocketlm.runtime.hardware import cpu_name

BASE = "smollm2-135m-instruct"
TARGET_INTENT = 0.99
TARGET_CPU_MIN = 40.0
METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "sts", "intent_accuracy")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine(threads: int) -> dict:
    import torch
    import transformers

    import pocketlm

    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "pocketlm": pocketlm.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def start_teacher(threads: int, port: int = 0) -> tuple[subprocess.Popen, str]:
    """llama_cpp.server with the built-in SmolLM2 GGUF on loopback; (process, base URL)."""
    import socket

    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(base_path(BASE)), "--host", "127.0.0.1",
           "--port", str(port), "--n_threads", str(threads), "--n_ctx", "2048", "--model_alias", "smollm2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("docassist: llama_cpp.server did not start (pip install 'llama-cpp-python[server]')")
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("docassist: llama_cpp.server did not answer in 120 s")


def evaluate_model(name: str, model: Path, gold: list[dict], out: Path, threads: int, max_new_tokens: int,
                   matcher) -> dict:
    path = out / f"pred-{name}.jsonl"
    if path.exists() and len(path.read_text().splitlines()) == len(gold):  # a rerun reuses finished predictions
        preds = [json.loads(x) for x in path.read_text().splitlines()]
    else:
        with load_runtime(str(model), backend="torch", threads=threads, n_ctx=4096) as rt:
            preds = predict_records(rt, gold, max_new_tokens=max_new_tokens, progress=True)
        path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    res = score(gold, preds, sts=matcher)
    res["ttft_s"] = sorted(p["ttft_s"] for p in preds)[len(preds) // 2]
    res["decode_tok_s"] = sorted(p["decode_tok_s"] for p in preds)[len(preds) // 2]
    return res


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, task in zip(axes, TASKS):
        xs = range(len(METRICS))
        for i, (name, res) in enumerate(results.items()):
            row = res["tasks"].get(task, {})
            ax.bar([x + 0.4 * i for x in xs], [row.get(m, 0) for m in METRICS], width=0.4, label=name)
        ax.set_xticks([x + 0.2 for x in xs], METRICS, rotation=30)
        ax.set_title(task)
    axes[0].legend()
    fig.suptitle("DocAssist on held-out documents: zero-shot SmolLM2-135M-Instruct vs docassist-smollm2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-docassist", help="work dir (reruns resume: data, fine-tune)")
    ap.add_argument("--base", default=None, help="an imported SmolLM2 checkpoint (default: import the built-in)")
    ap.add_argument("--train-docs", type=int, default=48)
    ap.add_argument("--test-docs", type=int, default=10)
    ap.add_argument("--min-tokens", type=int, default=340)
    ap.add_argument("--max-tokens", type=int, default=600)
    ap.add_argument("--teacher-url", default=None, help="default: llama_cpp.server with the built-in GGUF")
    ap.add_argument("--teacher-model", default="smollm2")
    ap.add_argument("--teacher-mode", default="per-task", choices=["per-task", "json"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--max-steps", type=int, default=None, help="fine-tune steps (default: the recipe's 1 epoch)")
    ap.add_argument("--quick", action="store_true", help="smoke run: a few documents and steps, numbers meaningless")
    args = ap.parse_args()
    if args.quick:
        args.train_docs, args.test_docs, args.max_steps, args.max_new_tokens = 2, 1, 1, 16
        args.min_tokens, args.max_tokens = 100, 200
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_wall, t_cpu = time.perf_counter(), cpu_seconds()
    seconds: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        seconds[name] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    base = Path(args.base) if args.base else out / "base"
    if not args.base and not (base / "config.json").exists():
        import_model(BASE, base)
    tokenizer = load_tokenizer(base)
    if not (out / "docs" / "test").exists():
        train, test = split(args.train_docs, args.test_docs, seed=0, min_tokens=args.min_tokens,
                            max_tokens=args.max_tokens, tokenizer=tokenizer)
        write_documents(train, out / "docs" / "train")
        write_documents(test, out / "docs" / "test")
    stage("base + documents", t0)

    t0 = time.perf_counter()
    server = None
    url = args.teacher_url
    if url is None:
        server, url = start_teacher(args.threads)
    cfg = TeacherConfig(url=url, model=args.teacher_model, mode=args.teacher_mode, retries=2)
    data = {}
    try:
        for name in ("train", "test"):
            say(f"teacher ({args.teacher_mode}) on the {name} documents at {url}")
            data[name] = build(out / "docs" / name, out / "data" / name, cfg, concurrency=1, max_doc_tokens=1000,
                               tokenizer=tokenizer, progress=True)
            say(f"{name}: {data[name]['annotated'] + data[name]['already_done']} documents annotated, "
                f"{len(data[name]['failed_documents'])} failed, {data[name]['sft_records']} chat records")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    stage("teacher data", t0)

    t0 = time.perf_counter()
    ft = out / "finetune"
    cmd = [sys.executable, "-m", "pocketlm.cli", "finetune", "docassist-smollm2", "--out", str(ft), "--base",
           str(base), "--data", str(out / "data" / "train" / "sft.jsonl")]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    say("fine-tune: " + " ".join(cmd[2:]))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if subprocess.run(cmd, env=env).returncode != 0:
        raise SystemExit("docassist: the fine-tune failed")
    ft_summary = json.loads((ft / "summary.json").read_text()) if (ft / "summary.json").exists() else {}
    stage("fine-tune", t0)

    gold = read_records(out / "data" / "test" / "eval.jsonl", "gold")
    matcher = get_matcher("auto", quiet=True)
    results = {}
    for name, model in (("zero-shot", base), ("fine-tuned", ft / "final")):
        t0 = time.perf_counter()
        say(f"{name}: answering {len(gold)} held-out requests")
        results[name] = evaluate_model(name, model, gold, out, args.threads, args.max_new_tokens, matcher)
        stage(f"eval {name}", t0)
    cpu_min = (cpu_seconds() - t_cpu) / 60
    wall_min = (time.perf_counter() - t_wall) / 60

    zs, ftr = results["zero-shot"], results["fine-tuned"]
    worse = [f"{task}.{m}" for task in zs["tasks"] for m in METRICS + ("distinct_1", "distinct_2")
             if m in zs["tasks"][task] and ftr["tasks"][task][m] < zs["tasks"][task][m] - 1e-9]
    checks = {"intent_accuracy": ftr["intent_accuracy"] >= TARGET_INTENT, "no_metric_worse": not worse,
              "cpu_minutes": cpu_min <= TARGET_CPU_MIN}
    print()
    head = f"{'task':<21}{'model':<12}" + "".join(f"{m:>16}" for m in METRICS) + f"{'distinct-1/2':>15}"
    print(head)
    print("-" * len(head))
    for task in TASKS:
        for name, res in results.items():
            row = res["tasks"].get(task)
            if row is None:
                continue
            div = f"{row['distinct_1']:.3f}/{row['distinct_2']:.3f}" if "distinct_1" in row else "-"
            print(f"{task:<21}{name:<12}" + "".join(f"{row[m]:>16.4f}" for m in METRICS) + f"{div:>15}")
    print("-" * len(head))
    for name, res in results.items():
        print(f"{name:<12} intent accuracy {res['intent_accuracy']:.4f}  in SlimLM's format {res['parse_rate']:.4f}  "
              f"three-task average {res['average']:.4f}  median TTFT {res['ttft_s']:.2f} s  "
              f"decode {res['decode_tok_s']:.1f} tok/s")
    print(f"\nintent accuracy >= {TARGET_INTENT:.0%} after fine-tuning: {'PASS' if checks['intent_accuracy'] else 'FAIL'}"
          f" ({ftr['intent_accuracy']:.4f})")
    print(f"no metric worse than zero-shot: {'PASS' if checks['no_metric_worse'] else 'FAIL'}"
          + (f" (worse: {', '.join(worse)})" if worse else ""))
    print(f"CPU time <= {TARGET_CPU_MIN:.0f} min: {'PASS' if checks['cpu_minutes'] else 'FAIL'} ({cpu_min:.1f} min CPU, "
          f"{wall_min:.1f} min wall; stages {seconds})")
    print(f"STS model: {zs['sts_model']}; {len(gold)} held-out requests from {args.test_docs} documents; "
          f"training: {data['train']['sft_records']} chat records from {args.train_docs} documents")
    plot(results, out / "docassist.png")
    print(f"plot: {out / 'docassist.png'}")
    journal = read_journal(out / "data" / "train" / "annotations.jsonl")
    summary = {"benchmark": "docassist", "passed": all(checks.values()), "checks": checks, "worse": worse,
               "zero_shot": zs, "fine_tuned": ftr, "cpu_minutes": round(cpu_min, 1), "wall_minutes": round(wall_min, 1),
               "seconds": seconds, "n_test_requests": len(gold), "train_documents": args.train_docs,
               "test_documents": args.test_docs, "doc_tokens": [args.min_tokens, args.max_tokens],
               "teacher": {"url": args.teacher_url or "llama_cpp.server (built-in SmolLM2 GGUF)",
                           "mode": args.teacher_mode, "failed_train_documents": sum(
                               r["status"] != "ok" for r in journal.values())},
               "sft_records": data["train"]["sft_records"],
               "finetune": {k: ft_summary.get(k) for k in ("steps", "tokens_seen", "elapsed_s", "median_tokens_per_s", "first_loss", "last_loss")
                            if k in ft_summary},
               "quick": args.quick, "machine": machine(args.threads)}
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
