"""Evaluation tasks, one small class each (nanochat-style): `run(model, limit) -> {metric: value}`.

Built in, offline: `perplexity` (held-out text shipped in the package, scored by lm-eval's rolling
log-likelihood), `intent` (DroidCall accuracy / soft accuracy on the synthesized held-out split, with
pocketlm.intent's decoding and metrics) and `docassist` (pocketlm.documents: ROUGE-L, STS, intent
accuracy). Any other name is an lm-eval task (hellaswag, arc_easy, piqa, winogrande, boolq, ...), whose
dataset comes from the hub: a missing one is a one-line error.
"""

from __future__ import annotations

import contextlib
import logging
import os
from importlib import resources
from typing import Any, Callable

from pocketlm.documents.metrics import read_records, score
from pocketlm.documents.predict import predict_records
from pocketlm.errors import UserError
from pocketlm.eval.lm import ModelUnderTest
from pocketlm.intent.infer import load_runner, predict
from pocketlm.intent.metrics import evaluate, get_matcher
from pocketlm.intent.pipeline import function_accuracy
from pocketlm.intent.specs import load_specs
from pocketlm.intent.synth import synthesize
from pocketlm.runtime.engine import load_runtime

# PhoneLM's capability list; any lm-eval task name works, these are the ones `--tasks phonelm` expands to
PHONELM_TASKS = ("hellaswag", "arc_easy", "piqa", "winogrande", "boolq")


class Task:
    name = ""
    primary = ""  # the metric the report card plots
    higher_is_better = True

    def run(self, model: ModelUnderTest, limit: int | None, log: Callable[[str], None]) -> dict[str, Any]:
        raise NotImplementedError


@contextlib.contextmanager
def _quiet_lm_eval():
    """lm-eval logs every default it fills in at INFO/WARNING; keep the table readable."""
    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def run_lm_eval(model: ModelUnderTest, task: str | dict, limit: int | None) -> dict[str, Any]:
    """One lm-eval task through its Python API; returns {metric: value} without stderr entries."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    name = task if isinstance(task, str) else task["task"]
    with _quiet_lm_eval():
        results = simple_evaluate(model=model.lm(), tasks=[task], limit=limit, task_manager=TaskManager(),
                                  log_samples=False, bootstrap_iters=0)
    metrics = {}
    for key, value in results["results"][name].items():
        metric, _, _filter = key.partition(",")
        if metric in ("alias", "name", "sample_len") or metric.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        metrics[metric] = value
    metrics["n"] = int(results.get("n-samples", {}).get(name, {}).get("effective", 0)) or limit
    return metrics


class PerplexityTask(Task):
    """Held-out English prose (`assets/eval/heldout.jsonl`, written for pocketlm, in no training corpus)."""

    name = "perplexity"
    primary = "bits_per_byte"
    higher_is_better = False

    @staticmethod
    def data_file() -> str:
        return str(resources.files("pocketlm") / "assets" / "eval" / "heldout.jsonl")

    def config(self) -> dict:
        # lm-eval's wikitext task, pointed at the packaged file (the `json` builder reads it offline)
        return {"task": "pocketlm_perplexity", "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": self.data_file()}}, "test_split": "test",
                "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
                "metric_list": [{"metric": m, "higher_is_better": False}
                                for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")]}

    def run(self, model, limit, log):
        return run_lm_eval(model, self.config(), limit)


class IntentTask(Task):
    """DroidCall's metrics on the synthesized held-out split (the tiny intent pipeline's test set: seed 1,
    unseen phrasings), decoded as `pocketlm intent predict` does (constrained, the fine-tune's prompt)."""

    name = "intent"
    primary = "accuracy"
    default_n = 200  # DroidCall's test split size

    def run(self, model, limit, log):
        samples = synthesize(self.default_n, seed=1, split="test", multi_fraction=0.3)[:limit or self.default_n]
        specs = load_specs()
        runner = load_runner(model.path, "llamacpp" if model.kind == "gguf" else "torch", model.tokenizer)
        try:
            k = int(runner.meta.get("candidates", 4))
            preds = predict(runner, samples, specs, seed=1, k=k, max_new_tokens=160,
                            doc_style=runner.meta.get("doc_style", "full"), progress=True)
        finally:
            runner.close()
        res = evaluate(samples, preds, specs, matcher=get_matcher("auto", quiet=True))
        return {"accuracy": res["accuracy"], "soft_accuracy": res["soft_accuracy"],
                "function_accuracy": function_accuracy(samples, preds), "unparsable": len(res["bad_predictions"]),
                "n": res["n"]}


class DocAssistTask(Task):
    """SlimLM's DocAssist (summarize, suggest questions, answer) on gold records (`pocketlm doc data`'s
    eval.jsonl, given with --docassist-data), answered on the engine and scored by pocketlm.documents:
    ROUGE-L and STS averaged over the three tasks, intent accuracy over all records.
    Without --docassist-data: the built-in set (assets/eval/docassist.jsonl), 30 requests on 10 held-out
    documents of the package's offline document set, answered by benchmarks/docassist.py's teacher (the
    imported SmolLM2-135M-Instruct, per task): it measures SlimLM's format and task routing offline; a
    stronger teacher's eval.jsonl measures answer quality."""

    name = "docassist"
    primary = "rougeL"

    def __init__(self, data: str | None = None):
        self.data = data

    def run(self, model, limit, log):
        data = self.data or str(resources.files("pocketlm") / "assets" / "eval" / "docassist.jsonl")
        gold = read_records(data, "gold")[:limit or None]
        rt = load_runtime(model.path, backend="llamacpp" if model.kind == "gguf" else "torch", n_ctx=None,
                          threads=model.threads, tokenizer=model.tokenizer)
        try:
            preds = predict_records(rt, gold, progress=True)
        finally:
            rt.close()
        res = score(gold, preds)
        per_task = list(res["tasks"].values())
        return {"rougeL": sum(t["rougeL"] for t in per_task) / len(per_task),
                "sts": sum(t["sts"] for t in per_task) / len(per_task),
                "intent_accuracy": res["intent_accuracy"], "average": res["average"], "n": res["n"]}


class LmEvalTask(Task):
    """Any task lm-eval knows by name; its dataset comes from the hub (or the datasets cache)."""

    primary = "acc"

    def __init__(self, name: str):
        self.name = name

    def run(self, model, limit, log):
        from lm_eval.tasks import TaskManager

        with _quiet_lm_eval():
            known = self.name in TaskManager().all_tasks
        if not known:
            raise UserError(f"unknown task '{self.name}': not built in ({', '.join(BUILTIN)}) and not an "
                            "lm-eval task (`lm-eval ls tasks` lists them)")
        try:
            metrics = run_lm_eval(model, self.name, limit)
        except (OSError, ConnectionError) as e:  # datasets' offline / not-found errors are OSErrors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"task '{self.name}' needs its dataset from the Hugging Face hub, which is not "
                            f"reachable or cached here ({first})") from None
        self.primary = next((m for m in ("acc_norm", "acc", "exact_match", "f1") if m in metrics),
                            next(iter(metrics), "acc"))
        return metrics


BUILTIN: dict[str, type[Task]] = {"perplexity": PerplexityTask, "intent": IntentTask, "docassist": DocAssistTask}


def get_tasks(names: str | list[str], options: dict[str, dict] | None = None) -> list[Task]:
    """Task objects by name ('phonelm' expands to PhoneLM's list); options: {task name: constructor kwargs}."""
    options = options or {}
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise UserError("--tasks needs at least one task name")
    out: list[Task] = []
    for n in names:
        if n == "phonelm":
            out += [LmEvalTask(t) for t in PHONELM_TASKS]
        else:
            out.append(BUILTIN[n](**options.get(n, {})) if n in BUILTIN else LmEvalTask(n))
    seen = set()
    return [t for t in out if not (t.name in seen or seen.add(t.name))]


__all__ = ["BUILTIN", "DocAssistTask", "IntentTask", "LmEvalTask", "PHONELM_TASKS", "PerplexityTask", "Task",
           "get_tasks", "run_lm_eval"]
