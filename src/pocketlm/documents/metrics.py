"""SlimLM's DocAssist metrics: BLEU (sacrebleu), ROUGE-1/2/L (rouge-score), STS (cosine similarity of the
local all-MiniLM-L6-v2 embeddings, found as pocketlm.intent.metrics finds it), intent accuracy, the
diversity of suggested questions (distinct-1/2) and an optional GEval-style LLM judge (1-5).

Gold records (`pocketlm doc data` writes them to eval.jsonl): {"doc_id", "task", "request", "response"}
(+ "document", needed by the judge). Prediction records, one per gold record in the same order:
{"intent", "response"} as `pocketlm doc --json` prints them, or raw model text under "output" (parsed
here; an unparsable answer has no intent and is scored as the raw text). Scores are on a 0-1 scale
(BLEU is sacrebleu's score / 100), per task and as a three-task average.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from typing import Any, Callable

from pocketlm.documents.prompt import TASKS, parse_answer, split_questions
from pocketlm.errors import UserError
from pocketlm.intent.metrics import get_matcher

TEXT_METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "sts")


def read_records(path: str | os.PathLike, what: str) -> list[dict]:
    """Non-blank JSONL lines as dicts; UserError (with the line) on a missing file or a bad line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {i}: invalid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise UserError(f"{path} line {i}: not a JSON object")
        out.append(rec)
    if not out:
        raise UserError(f"{what} file {path} has no records")
    return out


def check_gold(records: list[dict]) -> None:
    for i, r in enumerate(records, 1):
        if r.get("task") not in TASKS:
            raise UserError(f"gold record {i}: 'task' must be one of {', '.join(TASKS)}, got {r.get('task')!r}")
        if not isinstance(r.get("response"), str):
            raise UserError(f"gold record {i}: 'response' must be a string")


def prediction(rec: dict) -> tuple[str | None, str]:
    """(intent or None, response text) of a prediction record."""
    if isinstance(rec.get("output"), str) and "response" not in rec:
        parsed = parse_answer(rec["output"])
        return parsed.intent, parsed.response if parsed.ok else rec["output"].strip()
    intent = rec.get("intent") if rec.get("intent") in TASKS else None
    response = rec.get("response")
    return intent, response.strip() if isinstance(response, str) else ""


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n: unique n-grams / all n-grams over the texts (lower-cased words); 0 with none."""
    grams = []
    for t in texts:
        words = re.findall(r"\w+", t.lower())
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def score(gold_records: list[dict], pred_records: list[dict], *, sts: Any = "auto",
          judge: Callable[[dict, str], float | None] | None = None) -> dict:
    """Metrics of predictions against gold, aligned by position.

    Returns {"n", "intent_accuracy", "parse_rate", "average", "tasks": {task: {"n", "bleu", "rouge1",
    "rouge2", "rougeL", "sts", "intent_accuracy", ["distinct_1", "distinct_2"], ["geval"]}}, "sts_model"}.
    ``average`` is the mean over tasks of the mean of that task's text metrics (and GEval / 5 when
    judged), SlimLM's "three-task average" in spirit. ``sts``: a matcher with .similarity (default: the
    local embedding model, else a lexical fallback, named in sts_model). ``judge(gold_record,
    prediction) -> 1..5 or None``."""
    import sacrebleu
    from rouge_score import rouge_scorer

    check_gold(gold_records)
    if len(pred_records) != len(gold_records):
        raise UserError(f"{len(pred_records)} predictions for {len(gold_records)} gold records; "
                        "write one prediction per gold record, in order")
    for i, (g, p) in enumerate(zip(gold_records, pred_records), 1):
        if g.get("doc_id") is not None and p.get("doc_id") not in (None, g["doc_id"]):
            raise UserError(f"prediction {i} is for document {p['doc_id']!r}, gold {i} for {g['doc_id']!r}: "
                            "the files are misaligned")
    matcher = get_matcher("auto", quiet=True) if sts == "auto" else sts
    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    by_task: dict[str, list[tuple[dict, str | None, str]]] = defaultdict(list)
    for g, p in zip(gold_records, pred_records):
        by_task[g["task"]].append((g, *prediction(p)))
    tasks: dict[str, dict] = {}
    for task in (t for t in TASKS if t in by_task):
        items = by_task[task]
        golds = [g["response"] for g, _, _ in items]
        preds = [r for _, _, r in items]
        row: dict[str, Any] = {"n": len(items)}
        row["bleu"] = sacrebleu.corpus_bleu(preds, [golds]).score / 100
        rs = [rouge.score(g, p) for g, p in zip(golds, preds)]
        for k in ("rouge1", "rouge2", "rougeL"):
            row[k] = _mean([s[k].fmeasure for s in rs])
        row["sts"] = _mean([max(0.0, matcher.similarity(g, p)) if p.strip() and g.strip() else 0.0
                            for g, p in zip(golds, preds)])
        row["intent_accuracy"] = _mean([float(i == task) for _, i, _ in items])
        if task == "question_suggestion":  # diversity within each response's questions, averaged
            qs = [split_questions(p) for p in preds]
            row["distinct_1"] = _mean([distinct_n(q, 1) for q in qs])
            row["distinct_2"] = _mean([distinct_n(q, 2) for q in qs])
        if judge is not None:
            marks = [judge(g, p) for g, _, p in items]
            row["geval"] = _mean([m for m in marks if m is not None])
            row["geval_failed"] = sum(m is None for m in marks)
        tasks[task] = row

    def task_average(row: dict) -> float:
        parts = [row[k] for k in TEXT_METRICS] + ([row["geval"] / 5] if "geval" in row else [])
        return _mean(parts)

    n = len(gold_records)
    intents = [prediction(p)[0] for p in pred_records]
    return {
        "n": n,
        "intent_accuracy": _mean([float(i == g["task"]) for g, i in zip(gold_records, intents)]),
        "parse_rate": _mean([float(i is not None) for i in intents]),
        "average": _mean([task_average(r) for r in tasks.values()]),
        "tasks": tasks,
        "sts_model": getattr(matcher, "name", type(matcher).__name__),
    }
