"""Predictions over DocAssist gold records (eval.jsonl): one `run_assist` per record, in order, with
progress. Used by `pocketlm doc predict` and benchmarks/docassist.py."""

from __future__ import annotations

import sys

from pocketlm.documents.assist import DEFAULT_MAX_DOC_TOKENS, DEFAULT_MAX_NEW_TOKENS, run_assist
from pocketlm.documents.metrics import check_gold
from pocketlm.errors import UserError
from pocketlm.runtime.engine import Runtime


def predict_records(runtime: Runtime, gold: list[dict], *, max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS,
                    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, progress: bool = False) -> list[dict]:
    """[{"doc_id", "task", "intent", "response", "ttft_s", "prefill_tok_s", "decode_tok_s", "doc_tokens",
    "truncated"}] for gold records with "document", "task" and (QA) "question"."""
    from tqdm import tqdm

    check_gold(gold)
    out = []
    for i, g in enumerate(tqdm(gold, desc="predict", unit="req", disable=not progress, file=sys.stderr), 1):
        if not isinstance(g.get("document"), str):
            raise UserError(f"gold record {i} has no 'document' text")
        r = run_assist(runtime, g["document"], g["task"], question=g.get("question"),
                       n_questions=g.get("n_questions") or 3, max_doc_tokens=max_doc_tokens,
                       max_new_tokens=max_new_tokens)
        out.append({"doc_id": g.get("doc_id"), "task": g["task"], **r})
    return out


